package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
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

// TestHelpCommands: platform-api help lists the commands; each command's
// -h shows its own flags, token's without the server's settings.
func TestHelpCommands(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help"}, envMap(nil), &out, io.Discard); err != nil {
		t.Fatalf("help: %v", err)
	}
	for _, c := range commandNames {
		if !strings.Contains(out.String(), "\n  "+c+" ") {
			t.Errorf("help does not list %s:\n%s", c, out.String())
		}
	}
	usage := func(args ...string) string {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, envMap(nil), io.Discard, &stderr); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: %v", args, err)
		}
		return stderr.String()
	}
	tok := usage("token", "-h")
	for _, f := range []string{"-org", "-ttl", "-sub", "-data-dir"} {
		if !strings.Contains(tok, "  "+f+" ") {
			t.Errorf("token -h lacks %s:\n%s", f, tok)
		}
	}
	if strings.Contains(tok, "-ws-timeout") || strings.Contains(tok, "PLATFORM_ADDR") || strings.Count(tok, "\n  -") > 8 {
		t.Errorf("token -h lists server settings:\n%s", tok)
	}
	if sim := usage("simulate", "-h"); !strings.Contains(sim, "-gateways") || strings.Contains(sim, "PLATFORM_ADDR") {
		t.Errorf("simulate -h:\n%s", sim)
	}
	if load := usage("load", "-h"); !strings.Contains(load, "-scenario") || strings.Contains(load, "-gateways") {
		t.Errorf("load -h:\n%s", load)
	}
	out.Reset()
	if err := run(context.Background(), []string{"help", "token"}, envMap(nil), &out, io.Discard); err != nil || out.String() != tok {
		t.Errorf("help token: %v\n%s", err, out.String())
	}
	if err := run(context.Background(), []string{"bogus"}, envMap(nil), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "unknown command \"bogus\"") {
		t.Errorf("unknown command: %v", err)
	}
	// The token command still takes the data directory it signs with.
	dir := t.TempDir()
	if err := run(context.Background(), []string{"token", "-org", "00000000-0000-4000-8000-000000000000", "-data-dir", dir}, envMap(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
}
