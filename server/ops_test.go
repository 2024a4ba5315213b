package server

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// relay is a same-host TCP relay (nginx stream, a sidecar) in front of
// the public port: every client it carries reaches the server from
// 127.0.0.1, with no proxy header, since it copies bytes, TLS included.
func relay(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestOperationalEndpointsBehindARelay: with no metrics token, /metrics and
// /debug/pprof answered any loopback peer, and a same-host TCP relay makes
// every client one: anyone reaching the relay read the fleet's metrics and
// the server's heap. The public port now serves them only with the token;
// without one they are on the operational listener alone.
func TestOperationalEndpointsBehindARelay(t *testing.T) {
	get := func(c *http.Client, url, token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	paths := []string{"/metrics", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine", "/debug/pprof/symbol"}

	t.Run("NoToken", func(t *testing.T) {
		e := newEnv(t)
		via := "https://" + relay(t, e.srv.Listener.Addr().String())
		for _, p := range paths {
			code, body := get(e.client, via+p, "")
			wantError(t, code, body, 403, "PLATFORM_OPS_ADDR")
			if !strings.Contains(string(body), "PLATFORM_METRICS_TOKEN") {
				t.Fatalf("%s: %s does not name PLATFORM_METRICS_TOKEN", p, body)
			}
			if code, body := get(http.DefaultClient, e.ops.URL+p, ""); code != 200 || len(body) == 0 {
				t.Fatalf("operational listener %s: %d %.200s", p, code, body)
			}
		}
		// Probes stay on the public port.
		for _, p := range []string{"/health", "/ready"} {
			if code, body := get(e.client, via+p, ""); code != 200 {
				t.Fatalf("public %s: %d %s", p, code, body)
			}
		}
		code, body := get(http.DefaultClient, e.ops.URL+"/api/v1/apis", "")
		wantError(t, code, body, 404, "operational listener")
	})

	t.Run("Token", func(t *testing.T) {
		e := newEnvWith(t, func(o *Options) { o.MetricsToken = "s3cret" })
		via := "https://" + relay(t, e.srv.Listener.Addr().String())
		for _, p := range paths {
			code, body := get(e.client, via+p, "")
			wantError(t, code, body, 401, "PLATFORM_METRICS_TOKEN")
			if code, body := get(e.client, via+p, "s3cret"); code != 200 {
				t.Fatalf("public %s with the token: %d %.200s", p, code, body)
			}
			// A token set holds on the operational listener too.
			code, body = get(http.DefaultClient, e.ops.URL+p, "")
			wantError(t, code, body, 401, "PLATFORM_METRICS_TOKEN")
			if code, body := get(http.DefaultClient, e.ops.URL+p, "s3cret"); code != 200 {
				t.Fatalf("operational %s with the token: %d %.200s", p, code, body)
			}
		}
	})
}
