package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// The keys scenario (platform-api load -scenario keys) measures API keys
// (contract §7) in an organization holding many: the project of the run
// holds -apis APIs with -keys-per-api keys each and one gateway, with a
// token, that every API is deployed to (it never connects). Its phases,
// in this order: key-page (a page of 100 keys of the first API),
// key-pull (the gateway's GET /api/internal/v1/apis/api-keys, every key
// of every API), key-create (keys created on the first API; last, so that
// the keys it makes change neither of the other two).

// keysDefaultPerAPI is -keys-per-api's default.
const keysDefaultPerAPI = 10

// runKeys sets up and measures the keys scenario.
func (l *loader) runKeys(ctx context.Context, rep *LoadReport) error {
	project, total, err := l.prepare(ctx, rep)
	if err != nil {
		return err
	}
	apis, err := l.apiIDs(ctx, project, total)
	if err != nil {
		return err
	}
	if err := l.fillKeys(ctx, rep, apis); err != nil {
		return err
	}
	gw, key, err := l.keysGateway(ctx)
	if err != nil {
		return err
	}
	if err := l.deployTo(ctx, rep, apis, gw); err != nil {
		return err
	}
	keys := len(apis) * l.opt.KeysPerAPI
	rep.Keys, rep.Gateway = keys, gw

	page := fmt.Sprintf("/api/v1/apis/%s/api-keys?limit=%d", apis[0], listLimit)
	var first struct{ Count int }
	if err := l.call(ctx, "GET", page, nil, &first, 200); err != nil {
		return err
	}
	if want := min(listLimit, l.opt.KeysPerAPI); first.Count < want {
		l.fail("key page: it held %d keys, want %d", first.Count, want)
	}
	ph := LoadPhase{Name: "key-page", Project: project, APIs: len(apis), Keys: keys}
	l.measure(ctx, &ph, http.StatusOK, l.getRequests(page), false)
	rep.Phases = append(rep.Phases, ph)
	if ctx.Err() != nil {
		return nil
	}

	pull := l.pullRequests(key)
	req, err := pull(ctx)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := l.do(req, http.StatusOK, &buf, true); err != nil {
		return fmt.Errorf("key pull: %w", err)
	}
	var pulled []json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &pulled); err != nil {
		return fmt.Errorf("key pull answered %.200s: %w", buf.Bytes(), err)
	}
	if len(pulled) < keys {
		l.fail("key pull: %d keys, want at least %d", len(pulled), keys)
	}
	ph = LoadPhase{Name: "key-pull", Project: project, APIs: len(apis), Keys: len(pulled)}
	l.measure(ctx, &ph, http.StatusOK, pull, false)
	rep.Phases = append(rep.Phases, ph)
	if ctx.Err() != nil {
		return nil
	}

	ph = LoadPhase{Name: "key-create", Project: project, APIs: len(apis), Keys: keys}
	l.measure(ctx, &ph, http.StatusCreated, l.keyRequests(apis[0]), false)
	rep.Phases = append(rep.Phases, ph)
	return nil
}

// apiIDs returns the ids of the project's APIs (total of them).
func (l *loader) apiIDs(ctx context.Context, project string, total int) ([]string, error) {
	ids := make([]string, 0, total)
	for off := 0; off < total; off += listLimit {
		var page struct{ List []struct{ ID string } }
		path := fmt.Sprintf("/api/v1/apis?projectId=%s&limit=%d&offset=%d", project, listLimit, off)
		if err := l.call(ctx, "GET", path, nil, &page, 200); err != nil {
			return nil, err
		}
		for _, a := range page.List {
			ids = append(ids, a.ID)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("the project holds no API")
	}
	return ids, nil
}

// fillKeys creates -keys-per-api keys on each API, concurrently.
func (l *loader) fillKeys(ctx context.Context, rep *LoadReport, apis []string) error {
	start := time.Now()
	n := len(apis) * l.opt.KeysPerAPI
	makers := make([]func(context.Context) (*http.Request, error), len(apis))
	for i, api := range apis {
		makers[i] = l.keyRequests(api)
	}
	err := l.parallel(ctx, n, "creating keys", func(i int) error {
		req, err := makers[i%len(apis)](ctx)
		if err == nil {
			var buf bytes.Buffer
			_, err = l.do(req, http.StatusCreated, &buf, false)
		}
		return err
	})
	rep.KeysFillSec = time.Since(start).Seconds()
	return err
}

// keysGateway registers the gateway of the keys scenario and returns its
// id and a token of it.
func (l *loader) keysGateway(ctx context.Context) (id, token string, err error) {
	name := "load-" + l.suffix
	var gw struct{ ID string }
	if err := l.call(ctx, "POST", "/api/v1/gateways", map[string]any{"name": name, "displayName": name,
		"vhost": "load.example.com"}, &gw, 201); err != nil {
		return "", "", fmt.Errorf("register the gateway: %w", err)
	}
	l.mu.Lock()
	l.gateways = append(l.gateways, gw.ID)
	l.mu.Unlock()
	var tok struct{ Token string }
	if err := l.call(ctx, "POST", "/api/v1/gateways/"+gw.ID+"/tokens", nil, &tok, 201); err != nil {
		return "", "", fmt.Errorf("token of the gateway: %w", err)
	}
	return gw.ID, tok.Token, nil
}

// deployTo deploys every API to the gateway, concurrently.
func (l *loader) deployTo(ctx context.Context, rep *LoadReport, apis []string, gw string) error {
	start := time.Now()
	items := []map[string]any{{"gatewayId": gw, "vhost": "load.example.com"}}
	err := l.parallel(ctx, len(apis), "deploying to the gateway", func(i int) error {
		return l.call(ctx, "POST", "/api/v1/apis/"+apis[i]+"/deploy-revision", items, nil, 200)
	})
	rep.DeploySec = time.Since(start).Seconds()
	return err
}

// keyRequests returns a maker of key create requests on the API, each
// with a name of its own (the server makes the value).
func (l *loader) keyRequests(api string) func(context.Context) (*http.Request, error) {
	url := l.target + "/api/v1/apis/" + api + "/api-keys"
	prefix := `{"name":"load-` + l.suffix + `-`
	return func(ctx context.Context) (*http.Request, error) {
		body := strconv.AppendInt([]byte(prefix), l.seq.Add(1), 10)
		body = append(body, `"}`...)
		req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = http.Header{"Authorization": l.auth, "Content-Type": jsonType}
		return req, nil
	}
}

// pullRequests returns a maker of the gateway's key pulls.
func (l *loader) pullRequests(token string) func(context.Context) (*http.Request, error) {
	url := l.target + "/api/internal/v1/apis/api-keys"
	key := []string{token}
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return nil, err
		}
		req.Header = http.Header{"Api-Key": key}
		return req, nil
	}
}

// cleanupGateways deletes the gateways the run registered (after their
// APIs).
func (l *loader) cleanupGateways(ctx context.Context, rep *LoadReport) {
	l.mu.Lock()
	gws := l.gateways[l.cleanedGateways:]
	l.cleanedGateways = len(l.gateways)
	l.mu.Unlock()
	for _, id := range gws {
		if err := l.call(ctx, "DELETE", "/api/v1/gateways/"+id, nil, nil, 204, 404); err != nil {
			l.fail("clean-up: %v", err)
			continue
		}
		rep.DeletedGateways++
	}
}
