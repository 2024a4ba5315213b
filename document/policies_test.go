package document

import (
	"slices"
	"testing"

	"platform-api/store"
)

func TestAPIKeyAuthPolicy(t *testing.T) {
	key := func(header, query string) *store.API {
		return &store.API{Security: &store.Security{Enabled: true, APIKey: &store.APIKey{Enabled: true, Header: header, Query: query}}}
	}
	for _, c := range []struct {
		name string
		api  *store.API
		want []restPolicy
		err  bool
	}{
		{"no security", &store.API{}, nil, false},
		{"security off", &store.API{Security: &store.Security{APIKey: &store.APIKey{Enabled: true, Header: "k"}}}, nil, false},
		{"header", key("X-Key", "k"), []restPolicy{{Name: "api-key-auth", Version: "v1", Params: map[string]any{"key": "X-Key", "in": "header"}}}, false},
		{"query only when no header", key("", "k"), []restPolicy{{Name: "api-key-auth", Version: "v1", Params: map[string]any{"key": "k", "in": "query"}}}, false},
		{"cookie only", key("", ""), nil, true},
	} {
		got, err := documentAPIPolicies(c.api)
		if (err != nil) != c.err || len(got) != len(c.want) {
			t.Errorf("%s: %v, %v", c.name, got, err)
			continue
		}
		for i := range got {
			g, w := got[i], c.want[i]
			if g.Name != w.Name || g.Version != w.Version || g.Params.(map[string]any)["key"] != w.Params.(map[string]any)["key"] ||
				g.Params.(map[string]any)["in"] != w.Params.(map[string]any)["in"] {
				t.Errorf("%s: %+v, want %+v", c.name, g, w)
			}
		}
	}
}

func TestMissingPolicies(t *testing.T) {
	needed := []string{"api-key-auth@v1", "subscription-validation@v1"}
	for _, c := range []struct {
		have, want []string
	}{
		{nil, needed},
		{[]string{"api-key-auth@v1", "subscription-validation@v1"}, nil},
		{[]string{"api-key-auth@v1.2.0", "subscription-validation"}, nil},
		{[]string{"api-key-auth@1.0.0", "cors@v1"}, []string{"subscription-validation@v1"}},
		{[]string{"api-key-auth@v2"}, needed},
	} {
		if got := MissingPolicies(needed, c.have); !slices.Equal(got, c.want) {
			t.Errorf("have %v: missing %v, want %v", c.have, got, c.want)
		}
	}
}
