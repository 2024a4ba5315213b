package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPlainHTTPOnTLSPortIsJSON: http:// on the TLS port is answered with
// the contract's JSON error body, not Go's text 400, and the port keeps
// serving HTTPS.
func TestPlainHTTPOnTLSPortIsJSON(t *testing.T) {
	base, _ := startServer(t, nil)
	plain := "http://" + strings.TrimPrefix(base, "https://")
	for range 2 {
		resp, err := http.Get(plain + "/health")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var b struct {
			Code        int
			Message     string
			Description string
		}
		if err := json.Unmarshal(data, &b); err != nil || resp.StatusCode != 400 || b.Code != 400 ||
			resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(b.Description, "https://") {
			t.Fatalf("plain HTTP: %d %q %s (%v)", resp.StatusCode, resp.Header.Get("Content-Type"), data, err)
		}
	}
	resp, err := insecureClient().Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTPS after plain HTTP: %d", resp.StatusCode)
	}
}

func insecureClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}
