package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"platform-api/fleet"
	"platform-api/store"
)

// TestAckErrorCodesAreBounded: every distinct errorCode a gateway sent
// became a /metrics series of its own, for acknowledgements that matched no
// deployment too (300,000 of them took the server from 40 to 257 MB, for
// good). Codes outside the contract's are counted as "other", and
// acknowledgements that match nothing the server waits for are limited per
// connection, the excess dropped and counted.
func TestAckErrorCodesAreBounded(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	g.connect()
	const sent = 1500 // over the allowance's burst
	for i := range sent {
		g.ack(uuid.NewString(), uuid.NewString(), "deploy", "failed", fmt.Sprintf("CODE_%d_%s", i, strings.Repeat("€", 30)), "")
	}
	var counted, dropped int64
	waitFor(t, func() bool {
		counted, dropped = ackTotals(e)
		return counted+dropped == sent
	})
	if dropped == 0 {
		t.Fatalf("%d unexpected acknowledgements in a burst were all taken", sent)
	}
	series := 0
	for _, s := range e.scrape(t) {
		if s.name == "platform_gateway_acks_total" {
			series++
			if code := s.labels["error_code"]; code != "other" {
				t.Fatalf("series of error code %q", code)
			}
		}
		if s.name == "platform_gateway_acks_dropped_total" && s.labels["reason"] == "rate_limited" && s.value != float64(dropped) {
			t.Fatalf("dropped counter %v, want %d", s.value, dropped)
		}
	}
	if series != 1 {
		t.Fatalf("%d series of acknowledgements, want 1", series)
	}
}

// TestAckErrorCodeCutInACharacter: a gateway's long non-ASCII errorCode was
// cut at byte 64, inside a character; on PostgreSQL the batch of
// acknowledgements holding it failed and was dropped, other organizations'
// with it (their deployments then ended FAILED DEPLOYMENT_TIMEOUT), and the
// cut label broke Prometheus's parser. A NUL in the code did the same.
// Codes are cut on a character boundary and cleaned before they join a
// batch, and every acknowledgement of the batch is recorded.
func TestAckErrorCodeCutInACharacter(t *testing.T) {
	e := newEnvWith(t, fastHub)
	long := strings.Repeat("€", 30) // 90 bytes: byte 64 is inside a character
	codes := []string{long, "BAD\x00CODE", "GATEWAY_PROCESSING_ERROR"}
	type tenant struct {
		f *testFleet
		g *gen2Gateway
	}
	var tenants []tenant
	for i, code := range codes {
		f := newFleet(t, e, 1)
		g := newGen2(t, e, f.keys[0], f.gws[0].ID)
		g.connect()
		if i < 2 {
			g.fail[f.api] = code
		}
		go g.handleAll()
		tenants = append(tenants, tenant{f, g})
	}
	// Three organizations deploy at once, so that their acknowledgements
	// share batches.
	out := make([][]fleet.Result, len(tenants))
	var wg sync.WaitGroup
	for i, tn := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.must(200, "POST", "/api/v1/apis/"+tn.f.api+"/deploy-revision?wait=5s", tn.f.tok,
				[]map[string]string{{"gatewayId": tn.f.gws[0].ID}}, &out[i])
		}()
	}
	wg.Wait()
	for i, code := range codes {
		got := out[i][0]
		want := store.StatusFailed
		if i == 2 {
			want = store.StatusDeployed
		}
		if got.Status != want {
			t.Fatalf("tenant %d (code %q): %+v, want %s", i, code, got, want)
		}
		if i == 2 {
			continue
		}
		if !utf8.ValidString(got.ErrorCode) || len(got.ErrorCode) > 64 || strings.ContainsRune(got.ErrorCode, 0) || got.ErrorCode == "" {
			t.Fatalf("tenant %d: stored error code %q", i, got.ErrorCode)
		}
		if d := deploymentStatus(t, e, tenants[i].f.tok, tenants[i].f.api, tenants[i].f.gws[0].ID); d["errorCode"] != got.ErrorCode {
			t.Fatalf("tenant %d: stored %v, answered %q", i, d, got.ErrorCode)
		}
	}
	if want := strings.Repeat("€", 21); out[0][0].ErrorCode != want {
		t.Fatalf("cut code %q, want %q", out[0][0].ErrorCode, want)
	}
	if out[1][0].ErrorCode != "BADCODE" {
		t.Fatalf("code with NUL stored as %q", out[1][0].ErrorCode)
	}
	// The scrape stays valid UTF-8 (scrape refuses anything else).
	e.scrape(t)
}

// TestNULInGatewayBodies: a NUL in a field of a gateway's manifest,
// fetch-batch or exists body was a 500 on PostgreSQL (which cannot store
// it); user routes already refused it. Every body now gets the same 400.
func TestNULInGatewayBodies(t *testing.T) {
	e := newEnv(t)
	f := newFleet(t, e, 1)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	for _, c := range []struct{ path, body string }{
		{"/api/internal/v1/gateways/" + f.gws[0].ID + "/manifest", `{"version":"1.0\u0000","functionalityType":"regular","policies":[]}`},
		{"/api/internal/v1/gateways/" + f.gws[0].ID + "/manifest", `{"version":"1.0","policies":[{"name":"p\u0000","version":"v1"}]}`},
		{"/api/internal/v1/deployments/fetch-batch", `{"deploymentIds":["\u0000"]}`},
		{"/api/internal/v1/artifacts/exists", `{"artifactIds":["a\u0000b"]}`},
		{"/api/v1/apis", `{"name":"x","description":"\u0000"}`},
	} {
		var code int
		var data []byte
		if strings.HasPrefix(c.path, "/api/v1/") {
			code, data = e.do("POST", c.path, f.tok, c.body)
		} else {
			code, data = g.call("POST", c.path, c.body)
		}
		wantError(t, code, data, 400, "NUL")
	}
}

// TestAckFloodDoesNotHoldOthersBack: 10,000 acknowledgements a second from
// one gateway took another organization's deploys from 0.03 s to 8 s on
// PostgreSQL, then to timeouts: each became a database write. What one
// connection sends beyond its allowance is dropped before it reaches the
// database, and another organization's deploy meanwhile is acknowledged
// and answered as usual.
func TestAckFloodDoesNotHoldOthersBack(t *testing.T) {
	e := newEnvWith(t, fastHub)
	flood := newFleet(t, e, 1)
	fg := newGen2(t, e, flood.keys[0], flood.gws[0].ID)
	fg.connect()
	other := newFleet(t, e, 1)
	og := newGen2(t, e, other.keys[0], other.gws[0].ID)
	og.connect()
	go og.handleAll()

	start := time.Now()
	const sent = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range sent {
			fg.ack(uuid.NewString(), uuid.NewString(), "deploy", "success", "", "")
		}
	}()
	var out []fleet.Result
	e.must(200, "POST", "/api/v1/apis/"+other.api+"/deploy-revision?wait=5s", other.tok,
		[]map[string]string{{"gatewayId": other.gws[0].ID}}, &out)
	if out[0].Status != store.StatusDeployed {
		t.Fatalf("the other organization's deploy during the flood: %+v", out)
	}
	<-done
	var taken, dropped int64
	waitFor(t, func() bool {
		taken, dropped = ackTotals(e)
		return taken+dropped >= sent
	})
	// The flooding connection's allowance: 1,000 at once, 100 a second
	// (the other gateway's own acknowledgement counts among those taken).
	if limit := 1000 + int64(100*time.Since(start).Seconds()) + 1; taken > limit {
		t.Fatalf("%d acknowledgements of the flood taken in %s, over the allowance of %d", taken, time.Since(start), limit)
	}
}

// ackTotals is how many acknowledgements the server took (counted by status
// and code) and how many it dropped over a connection's allowance.
func ackTotals(e *testEnv) (taken, dropped int64) {
	acks, _ := e.api.fleet.AckCounts()
	for _, a := range acks {
		taken += a.N
	}
	dropped, _, _ = e.api.fleet.AckDrops()
	return taken, dropped
}
