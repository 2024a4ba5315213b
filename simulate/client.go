package simulate

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// client calls the REST API of the target as one organization, through one
// HTTP client shared by everything a run does.
type client struct {
	target string // https://host:port, no trailing slash
	token  string // bearer JWT
	http   *http.Client
}

// newClient checks the target and token and makes the shared HTTP client.
// Requests share a few multiplexed HTTP/2 connections instead of opening
// one (and a TLS handshake) each: the simulator and the load generator are
// one host, and their handshakes would otherwise dominate the server's CPU.
func newClient(target, token string, insecure bool, timeout time.Duration) (*client, error) {
	if token == "" {
		return nil, errors.New("no bearer token: pass -token or set PLATFORM_TOKEN (mint one with platform-api token -org <uuid>)")
	}
	target = strings.TrimSuffix(target, "/")
	if !strings.HasPrefix(target, "https://") {
		return nil, errors.New("-target must be an https:// URL")
	}
	return &client{target: target, token: token, http: &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: insecure}, ForceAttemptHTTP2: true,
		MaxIdleConnsPerHost: 64, MaxConnsPerHost: 16}}}, nil
}

// newClients makes a client per base URL of targets, a comma-separated
// list of the replicas of one server, all sharing one HTTP client.
func newClients(targets, token string, insecure bool, timeout time.Duration) ([]*client, error) {
	var cs []*client
	seen := map[string]bool{}
	for t := range strings.SplitSeq(targets, ",") {
		c, err := newClient(strings.TrimSpace(t), token, insecure, timeout)
		if err != nil {
			return nil, err
		}
		// The same replica twice would count its deliveries as cross-replica.
		if seen[c.target] {
			return nil, fmt.Errorf("-target names %s twice", c.target)
		}
		seen[c.target] = true
		if len(cs) > 0 {
			c.http = cs[0].http
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// call makes an authenticated JSON request and decodes the answer into out.
func (c *client) call(ctx context.Context, method, path string, body, out any, want ...int) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.target+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if !slices.Contains(want, resp.StatusCode) {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// ensureOrganization registers the token's organization, under handle,
// unless it is registered already.
func (c *client) ensureOrganization(ctx context.Context, handle, name string) error {
	if err := c.call(ctx, "GET", "/api/v1/organizations", nil, nil, 200); err == nil {
		return nil
	}
	if err := c.call(ctx, "POST", "/api/v1/organizations", map[string]string{
		"handle": handle, "name": name, "region": "local"}, nil, 201); err != nil {
		return fmt.Errorf("register organization: %w", err)
	}
	return nil
}
