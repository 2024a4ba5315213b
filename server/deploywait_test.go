package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"platform-api/fleet"
	"platform-api/store"
)

// TestDeployWaitOutlastsWriteTimeout: a deploy's ?wait= is answered in
// full even when it is longer than the server's WriteTimeout (main's is a
// minute, and ?wait=60s is allowed): the answer was cut, on HTTP/1.1 and
// HTTP/2. Here the server's WriteTimeout is 1 s and the deploy waits 2 s
// for a second-generation gateway that never acknowledges.
func TestDeployWaitOutlastsWriteTimeout(t *testing.T) {
	base := newEnvWith(t, fastHub)
	srv := httptest.NewUnstartedServer(base.api)
	srv.Config.WriteTimeout = time.Second
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e := *base
	e.t, e.srv, e.client = t, srv, srv.Client()

	f := newFleet(t, &e, 1)
	g := newGen2(t, &e, f.keys[0], f.gws[0].ID)
	g.ignoreAcks = true // applies, never answers: the deploy waits it all
	g.connect()
	go g.handleAll()

	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			protos := new(http.Protocols)
			protos.SetHTTP1(proto == "HTTP/1.1")
			protos.SetHTTP2(proto == "HTTP/2.0")
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: protos}}
			defer client.CloseIdleConnections()
			req, _ := http.NewRequest("POST", srv.URL+"/api/v1/apis/"+f.api+"/deploy-revision?wait=2s",
				strings.NewReader(`[{"gatewayId":"`+f.gws[0].ID+`"}]`))
			req.Header.Set("Authorization", "Bearer "+f.tok)
			req.Header.Set("Content-Type", "application/json")
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("deploy with ?wait=2s past a 1 s write timeout: %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("deploy answer cut after %s: %v (%d bytes: %s)", took, err, len(body), body)
			}
			var out []fleet.Result
			if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 || resp.Proto != proto {
				t.Fatalf("%s %d after %s: %s (%v)", resp.Proto, resp.StatusCode, took, body, err)
			}
			if len(out) != 1 || out[0].Status != store.StatusDeploying || out[0].DeliveredConnections != 1 || took < 2*time.Second {
				t.Fatalf("after %s: %+v; want DEPLOYING after the whole wait", took, out)
			}
		})
	}
}
