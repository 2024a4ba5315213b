package simulate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// API keys (contract §7), with -keys N and -generation 2: each gateway
// keeps the key hashes it is sent (apikey.created, .updated, .revoked, only
// for an API it holds) and pulls (GET /apis/api-keys, on every connect,
// replacing what it holds). The run creates N keys on the measured API,
// then, with part of the fleet away (churn), regenerates a quarter of
// them, revokes a quarter and creates a tenth more while the away
// gateways reconnect; it reports whether every gateway converged on
// exactly the current set, and how long one revocation takes to be
// applied by every gateway.

// KeysReport is the key part of a run.
type KeysReport struct {
	Keys        int `json:"keys"`
	Regenerated int `json:"regenerated"`
	Revoked     int `json:"revoked"`
	CreatedMore int `json:"createdDuringChurn"`
	Churned     int `json:"churned"`
	// Creating a key: request latency, in milliseconds.
	CreateP50 float64 `json:"createP50Ms"`
	CreateP99 float64 `json:"createP99Ms"`
	// Last change answered -> every gateway holds exactly the current set.
	ConvergeMs   float64 `json:"convergeMs"`
	Converged    int     `json:"convergedGateways"`
	AllConverged bool    `json:"allConverged"`
	// One revocation, request sent -> each gateway dropped the key.
	RevokeP50 float64 `json:"revokeAppliedP50Ms"`
	RevokeP99 float64 `json:"revokeAppliedP99Ms"`
	RevokeMax float64 `json:"revokeAppliedMaxMs"`
}

// keyState is what a gateway holds of keys.
type keyState struct {
	keys map[string]string    // apiId/name -> SHA-256
	gone map[string]time.Time // apiId/name -> when apikey.revoked dropped it
}

func keySHA(v string) string {
	s := sha256.Sum256([]byte(strings.TrimSpace(v)))
	return hex.EncodeToString(s[:])
}

// applyKey applies a key event to the gateway's keys: dropped for an API
// it does not hold, as a real gateway does.
func (g *gateway) applyKey(i int, ev *event) {
	p := &ev.Payload
	var h struct {
		SHA256 string `json:"sha256"`
	}
	if ev.Type != "apikey.revoked" {
		if err := json.Unmarshal([]byte(p.APIKeyHashes), &h); err != nil || len(h.SHA256) != 64 {
			g.r.fail("%s to %s: apiKeyHashes is not a JSON-encoded string: %q", ev.Type, g.name, p.APIKeyHashes)
			return
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held[i] <= 0 {
		return // an API it does not hold
	}
	switch ev.Type {
	case "apikey.created":
		g.ks.keys[p.APIID+"/"+p.Name] = h.SHA256
	case "apikey.updated":
		g.ks.keys[p.APIID+"/"+p.KeyName] = h.SHA256
	case "apikey.revoked":
		delete(g.ks.keys, p.APIID+"/"+p.KeyName)
		g.ks.gone[p.APIID+"/"+p.KeyName] = time.Now()
	}
}

// pullKeys replaces the gateway's keys with GET /apis/api-keys from target
// at, as a gateway does on every connect.
func (g *gateway) pullKeys(ctx context.Context, at int) {
	var body []byte
	status, err := g.request(ctx, at, "GET", "/api/internal/v1/apis/api-keys", nil, &body)
	if err != nil || status != 200 {
		if ctx.Err() == nil && !g.r.replicaGone(err) {
			g.r.fail("key pull by %s: %d %v", g.name, status, err)
		}
		return
	}
	var list []struct {
		Name         string            `json:"name"`
		ArtifactUUID string            `json:"artifactUuid"`
		APIKeyHashes map[string]string `json:"apiKeyHashes"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		g.r.fail("key pull by %s: %v", g.name, err)
		return
	}
	keys := make(map[string]string, len(list))
	for _, k := range list {
		keys[k.ArtifactUUID+"/"+k.Name] = k.APIKeyHashes["sha256"]
	}
	g.mu.Lock()
	g.ks.keys = keys
	g.mu.Unlock()
}

// keysOf returns the keys the gateway holds of one API.
func (g *gateway) keysOf(apiID string) map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]string{}
	for k, h := range g.ks.keys {
		if name, ok := strings.CutPrefix(k, apiID+"/"); ok {
			out[name] = h
		}
	}
	return out
}

func (g *gateway) goneAt(apiID, name string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ks.gone[apiID+"/"+name]
}

// runKeys plays the key part of a run on the measured API.
func (r *runner) runKeys(ctx context.Context) *KeysReport {
	n := r.opt.Keys
	api := r.apis[0]
	base := "/api/v1/apis/" + api + "/api-keys"
	rep := &KeysReport{Keys: n}
	var mu sync.Mutex
	want := map[string]string{} // name -> SHA-256
	var created []float64
	create := func(name string) {
		var k struct{ APIKey string }
		start := time.Now()
		if err := r.call(ctx, "POST", base, map[string]any{"name": name}, &k, 201); err != nil {
			r.fail("create key %s: %v", name, err)
			return
		}
		d := ms(time.Since(start))
		mu.Lock()
		want[name], created = keySHA(k.APIKey), append(created, d)
		mu.Unlock()
	}
	r.parallel(ctx, n, func(i int) { create(fmt.Sprintf("k-%05d", i)) }, "creating keys")
	rep.CreateP50, rep.CreateP99, _ = percentiles(created)

	// Part of the fleet goes away; the changes are made while it does and
	// while it comes back.
	var churned []*gateway
	if r.opt.Churn > 0 {
		for _, i := range mathrand.Perm(len(r.gws))[:int(r.opt.Churn*float64(len(r.gws)))] {
			churned = append(churned, r.gws[i])
		}
		for _, g := range churned {
			g.disconnect()
		}
	}
	rep.Churned = len(churned)
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	mathrand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	regen, revoke := names[:len(names)/4], names[len(names)/4:len(names)/2]
	more := max(1, n/10)
	type change struct {
		kind, name string
	}
	var changes []change
	for _, name := range regen {
		changes = append(changes, change{"regenerate", name})
	}
	for _, name := range revoke {
		changes = append(changes, change{"revoke", name})
	}
	for i := range more {
		changes = append(changes, change{"create", fmt.Sprintf("m-%05d", i)})
	}
	mathrand.Shuffle(len(changes), func(i, j int) { changes[i], changes[j] = changes[j], changes[i] })
	var back sync.WaitGroup
	r.parallel(ctx, len(changes), func(i int) {
		if i == len(changes)/2 && len(churned) > 0 {
			back.Add(1)
			go func() {
				defer back.Done()
				r.forEach(ctx, churned, func(g *gateway) {
					if err := g.connect(ctx); err != nil {
						r.fail("reconnect %s: %v", g.name, err)
					}
				}, "keys: reconnecting")
			}()
		}
		c := changes[i]
		switch c.kind {
		case "regenerate":
			var k struct{ APIKey string }
			if err := r.call(ctx, "POST", base+"/"+c.name+"/regenerate", nil, &k, 200); err != nil {
				r.fail("regenerate key %s: %v", c.name, err)
				return
			}
			mu.Lock()
			want[c.name] = keySHA(k.APIKey)
			rep.Regenerated++
			mu.Unlock()
		case "revoke":
			if err := r.call(ctx, "DELETE", base+"/"+c.name, nil, nil, 204); err != nil {
				r.fail("revoke key %s: %v", c.name, err)
				return
			}
			mu.Lock()
			delete(want, c.name)
			rep.Revoked++
			mu.Unlock()
		case "create":
			create(c.name)
			mu.Lock()
			rep.CreatedMore++
			mu.Unlock()
		}
	}, "keys: changing")
	back.Wait()
	start := time.Now()
	rep.Converged, rep.AllConverged = r.awaitKeys(ctx, api, want)
	rep.ConvergeMs = ms(time.Since(start))

	// One revocation, timed on every gateway.
	if len(want) > 0 {
		var name string
		for name = range want {
			break
		}
		t0 := time.Now()
		if err := r.call(ctx, "DELETE", base+"/"+name, nil, nil, 204); err != nil {
			r.fail("revoke key %s: %v", name, err)
		} else {
			delete(want, name)
			ok, all := r.awaitKeys(ctx, api, want)
			rep.AllConverged = rep.AllConverged && all
			rep.Converged = min(rep.Converged, ok)
			var lat []float64
			for _, g := range r.gws {
				if at := g.goneAt(api, name); !at.IsZero() {
					lat = append(lat, ms(at.Sub(t0)))
				}
			}
			rep.RevokeP50, rep.RevokeP99, rep.RevokeMax = percentiles(lat)
			if len(lat) < len(r.gws) {
				r.fail("keys: %d of %d gateways were sent the revocation of %s", len(lat), len(r.gws), name)
			}
		}
	}
	return rep
}

// awaitKeys waits, at most the run's wait, until every gateway holds
// exactly want of the API, and returns how many do.
func (r *runner) awaitKeys(ctx context.Context, api string, want map[string]string) (int, bool) {
	deadline := time.Now().Add(r.opt.Wait)
	last := -1
	for {
		ok := 0
		var first string
		for _, g := range r.gws {
			got := g.keysOf(api)
			if mapsEqual(got, want) {
				ok++
			} else if first == "" {
				first = fmt.Sprintf("%s holds %d keys, want %d", g.name, len(got), len(want))
			}
		}
		if ok != last {
			r.progress("keys: %d/%d gateways hold the current set", ok, len(r.gws))
			last = ok
		}
		if ok == len(r.gws) {
			return ok, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.fail("keys: %d of %d gateways did not converge (%s)", len(r.gws)-ok, len(r.gws), first)
			return ok, false
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
