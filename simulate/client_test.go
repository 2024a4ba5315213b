package simulate

import (
	"strings"
	"testing"
)

// TestNewClients: -target takes one base URL or several, comma-separated,
// each https and named once; the clients share one HTTP client.
func TestNewClients(t *testing.T) {
	for _, tc := range []struct {
		targets string
		want    []string
		err     string
	}{
		{targets: "https://a:8443/", want: []string{"https://a:8443"}},
		{targets: "https://a:1, https://b:2,https://c:3", want: []string{"https://a:1", "https://b:2", "https://c:3"}},
		{targets: "https://a:1,", err: "https://"},
		{targets: "https://a:1,http://b:2", err: "https://"},
		{targets: "https://a:1,https://a:1/", err: "twice"},
	} {
		cs, err := newClients(tc.targets, "token", true, 0)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want one naming %q", tc.targets, err, tc.err)
			}
			continue
		}
		if err != nil || len(cs) != len(tc.want) {
			t.Fatalf("%q: %d clients, %v", tc.targets, len(cs), err)
		}
		for i, c := range cs {
			if c.target != tc.want[i] || c.http != cs[0].http {
				t.Errorf("%q: client %d is %s (shared HTTP client %v)", tc.targets, i, c.target, c.http == cs[0].http)
			}
		}
	}
}
