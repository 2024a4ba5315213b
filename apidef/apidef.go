// Package apidef holds the rules of an API definition, defaults and
// validation: the ones gateways apply when they load its document. The
// public API and the gateways' own imports both check with it.
package apidef

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"platform-api/httpx"
	"platform-api/store"
)

// The rules below are the ones gateways apply when they load an API
// document (contract §2 and §4), so nothing is accepted here that a gateway
// would later drop. Every failure names the JSON path of the field.
var (
	apiNamePattern     = regexp.MustCompile(`^[A-Za-z0-9 ._-]{1,100}$`)
	versionPattern     = regexp.MustCompile(`^v?\d+(\.\d+)?(\.\d+)?$`)
	contextPattern     = regexp.MustCompile(`^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$`)
	backendNamePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	tokenPattern       = regexp.MustCompile(`^[!#$%&'*+.^_` + "`" + `|~0-9A-Za-z-]{1,256}$`)
	pathParamPattern   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

	lifeCycleStatuses = []string{"CREATED", "STAGED", "PUBLISHED", "DEPRECATED", "RETIRED", "BLOCKED"}
	apiTypes          = []string{"HTTP", "WS", "SOAPTOREST", "SOAP", "GRAPHQL", "WEBSUB", "SSE", "WEBHOOK", "ASYNC"}
	transports        = []string{"http", "https", "ws", "wss"}
	methods           = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
	timeUnits         = []string{"second", "minute", "hour"}
)

// Limits on what one API may hold, so that one request cannot make the
// server store or render something unbounded.
const (
	MaxOperations      = 1000
	maxBackendServices = 100
	maxEndpoints       = 100
	maxPolicies        = 50
	maxScopes          = 100
	maxPathLen         = 1000
	maxPEMLen          = 64 << 10
)

// field is a named string field, for checks that run over several.
type field struct{ name, value string }

// ApplyDefaults fills what the contract says an omitted field means.
func ApplyDefaults(a *store.API) {
	if a.Provider == "" {
		a.Provider = "admin"
	}
	if a.Type == "" {
		a.Type = "HTTP"
	}
	if a.Transport == nil {
		a.Transport = []string{"http", "https"}
	}
	if a.LifeCycleStatus == "" {
		a.LifeCycleStatus = "CREATED"
	}
	if a.BackendServices == nil {
		a.BackendServices = []store.BackendService{}
	}
	if len(a.Operations) == 0 {
		a.Operations = nil
		for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
			a.Operations = append(a.Operations, store.Operation{Request: &store.OperationRequest{Method: m, Path: "/*"}})
		}
	}
}

// Validate checks a whole API definition, defaults applied. Its cost is
// linear in the definition: a list longer than its limit is reported as such
// without checking its items, and at most maxListedErrors problems are
// worded. It gives up with the context's error once the client has gone.
func Validate(ctx context.Context, a *store.API) error {
	var e httpx.FieldErrors
	if !apiNamePattern.MatchString(a.Name) {
		e.Add("name", "must be 1 to 100 characters of letters, digits, space, '.', '_' and '-'")
	}
	httpx.CheckText(&e, "displayName", a.DisplayName, false, 200)
	httpx.CheckText(&e, "description", a.Description, false, 4096)
	switch {
	case a.Context == "":
		e.Add("context", "is required, for example /payments")
	case len(a.Context) > 200:
		e.Add("context", "must be at most 200 characters")
	case !contextPattern.MatchString(a.Context) || strings.Contains(a.Context, "//"):
		e.Add("context", "must start with '/' and hold only URL path characters, with no empty segment")
	case a.Context != "/" && strings.HasSuffix(a.Context, "/"):
		e.Add("context", "must not end with '/' (unless it is exactly '/')")
	}
	if !versionPattern.MatchString(a.Version) {
		e.Add("version", "must look like v1, 1.2 or v1.2.3")
	}
	httpx.CheckText(&e, "provider", a.Provider, true, 200)
	if !httpx.IsID(a.ProjectID) {
		e.Add("projectId", "is required and must be a project UUID (%s)", httpx.IDDescription)
	}
	oneOf(&e, "lifeCycleStatus", a.LifeCycleStatus, lifeCycleStatuses)
	oneOf(&e, "type", a.Type, apiTypes)
	switch {
	case len(a.Transport) == 0:
		e.Add("transport", "must list at least one of %s", strings.Join(transports, ", "))
	case len(a.Transport) > len(transports):
		e.Add("transport", "must list at most %d values, each once: %s", len(transports), strings.Join(transports, ", "))
	default:
		for i, t := range a.Transport {
			oneOf(&e, fmt.Sprintf("transport[%d]", i), t, transports)
			if slices.Index(a.Transport, t) != i {
				e.Add(fmt.Sprintf("transport[%d]", i), "%q is listed twice", t)
			}
		}
	}
	if a.RevisionID < 0 {
		e.Add("revisionId", "must not be negative")
	}
	if a.RevisionedAPIID != "" {
		if !httpx.IsID(a.RevisionedAPIID) {
			e.Add("revisionedApiId", "must be an API UUID (%s)", httpx.IDDescription)
		}
	}
	validateMTLS(&e, "mtls", a.MTLS)
	if s := a.Security; s != nil {
		if k := s.APIKey; k != nil {
			for _, f := range []field{{"header", k.Header}, {"query", k.Query}, {"cookie", k.Cookie}} {
				if f.value != "" && !tokenPattern.MatchString(f.value) {
					e.Add("security.apiKey."+f.name, "must be a header, query or cookie name without spaces or separators")
				}
			}
		}
		if o := s.OAuth2; o != nil {
			if g := o.GrantTypes; g != nil {
				checkCallback(&e, "security.oauth2.grantTypes.authorizationCode.callbackUrl", g.AuthorizationCode)
				checkCallback(&e, "security.oauth2.grantTypes.implicit.callbackUrl", g.Implicit)
			}
			checkScopes(&e, "security.oauth2.scopes", o.Scopes)
		}
	}
	if c := a.CORS; c != nil {
		for _, f := range []field{{"allowOrigins", c.AllowOrigins}, {"allowMethods", c.AllowMethods},
			{"allowHeaders", c.AllowHeaders}, {"exposeHeaders", c.ExposeHeaders}} {
			httpx.CheckText(&e, "cors."+f.name, f.value, false, 4096)
		}
		nonNegative(&e, "cors.maxAge", c.MaxAge)
	}
	if rl := a.RateLimiting; rl != nil {
		nonNegative(&e, "api-rate-limiting.rateLimitCount", rl.RateLimitCount)
		if rl.RateLimitTimeUnit != "" || rl.Enabled {
			oneOf(&e, "api-rate-limiting.rateLimitTimeUnit", rl.RateLimitTimeUnit, timeUnits)
		}
		if rl.Enabled && rl.RateLimitCount == 0 {
			e.Add("api-rate-limiting.rateLimitCount", "must be at least 1 when rate limiting is enabled")
		}
	}

	backends := map[string]int{}
	if len(a.BackendServices) > maxBackendServices {
		e.Add("backend-services", "must hold at most %d backend services, not %d", maxBackendServices, len(a.BackendServices))
		return e.Err()
	}
	for i, b := range a.BackendServices {
		p := fmt.Sprintf("backend-services[%d]", i)
		if !backendNamePattern.MatchString(b.Name) {
			e.Add(p+".name", "must be 1 to 100 characters of letters, digits, '.', '_' and '-'")
		} else if j, dup := backends[b.Name]; dup {
			e.Add(p+".name", "%q is already the name of backend-services[%d]; names must be unique within the API", b.Name, j)
		} else {
			backends[b.Name] = i
		}
		if len(b.Endpoints) == 0 {
			e.Add(p+".endpoints", "must hold at least one endpoint")
		}
		if len(b.Endpoints) > maxEndpoints {
			e.Add(p+".endpoints", "must hold at most %d endpoints, not %d", maxEndpoints, len(b.Endpoints))
			continue
		}
		for j, ep := range b.Endpoints {
			ep := ep
			validateEndpoint(&e, fmt.Sprintf("%s.endpoints[%d]", p, j), &ep)
		}
		if t := b.Timeout; t != nil {
			nonNegative(&e, p+".timeout.connect", t.Connect)
			nonNegative(&e, p+".timeout.read", t.Read)
			nonNegative(&e, p+".timeout.write", t.Write)
		}
		if b.Retries < 0 || b.Retries > 100 {
			e.Add(p+".retries", "must be from 0 to 100")
		}
		if lb := b.LoadBalance; lb != nil {
			httpx.CheckText(&e, p+".loadBalance.algorithm", lb.Algorithm, false, 64)
		}
		if cb := b.CircuitBreaker; cb != nil {
			nonNegative(&e, p+".circuitBreaker.maxConnections", cb.MaxConnections)
			nonNegative(&e, p+".circuitBreaker.maxPendingRequests", cb.MaxPendingRequests)
			nonNegative(&e, p+".circuitBreaker.maxRequests", cb.MaxRequests)
			nonNegative(&e, p+".circuitBreaker.maxRetries", cb.MaxRetries)
		}
	}

	if len(a.Operations) > MaxOperations {
		e.Add("operations", "must hold at most %d operations, not %d", MaxOperations, len(a.Operations))
		return e.Err()
	}
	seen := map[string]int{}
	for i, op := range a.Operations {
		if i%64 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		p := fmt.Sprintf("operations[%d]", i)
		httpx.CheckText(&e, p+".name", op.Name, false, 200)
		httpx.CheckText(&e, p+".description", op.Description, false, 4096)
		r := op.Request
		if r == nil {
			e.Add(p+".request", "is required (with method and path)")
			continue
		}
		p += ".request"
		oneOf(&e, p+".method", r.Method, methods)
		if msg := checkOperationPath(r.Path); msg != "" {
			e.Add(p+".path", "%s", msg)
		}
		key := r.Method + " " + r.Path
		if j, dup := seen[key]; dup {
			e.Add(p, "%s is already operations[%d]; each method and path may appear once", key, j)
		} else {
			seen[key] = i
		}
		for j, ref := range r.BackendServices {
			rp := fmt.Sprintf("%s.backend-services[%d]", p, j)
			if _, ok := backends[ref.Name]; !ok {
				e.Add(rp+".name", "%q is not the name of a backend service of this API", ref.Name)
			}
			checkWeight(&e, rp+".weight", ref.Weight)
		}
		if au := r.Authentication; au != nil {
			checkScopes(&e, p+".authentication.scopes", au.Scopes)
		}
		checkPolicies(&e, p+".requestPolicies", r.RequestPolicies)
		checkPolicies(&e, p+".responsePolicies", r.ResponsePolicies)
	}
	return e.Err()
}

func validateEndpoint(e *httpx.FieldErrors, p string, ep *store.Endpoint) {
	u, err := url.Parse(ep.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
		e.Add(p+".url", "must be an http or https URL with a host, such as https://backend.internal:8080")
	} else if len(ep.URL) > 2048 {
		e.Add(p+".url", "must be at most 2048 characters")
	}
	httpx.CheckText(e, p+".description", ep.Description, false, 1024)
	checkWeight(e, p+".weight", ep.Weight)
	if h := ep.HealthCheck; h != nil {
		nonNegative(e, p+".healthCheck.interval", h.Interval)
		nonNegative(e, p+".healthCheck.timeout", h.Timeout)
		nonNegative(e, p+".healthCheck.unhealthyThreshold", h.UnhealthyThreshold)
		nonNegative(e, p+".healthCheck.healthyThreshold", h.HealthyThreshold)
	}
	validateMTLS(e, p+".mtls", ep.MTLS)
}

func validateMTLS(e *httpx.FieldErrors, p string, m *store.MTLS) {
	if m == nil {
		return
	}
	for _, f := range []field{{"clientCert", m.ClientCert}, {"clientKey", m.ClientKey}, {"caCert", m.CACert}} {
		if len(f.value) > maxPEMLen {
			e.Add(p+"."+f.name, "must be at most %d bytes", maxPEMLen)
		} else if !utf8.ValidString(f.value) {
			e.Add(p+"."+f.name, "must be PEM text")
		}
	}
}

// checkOperationPath returns what is wrong with an operation path, or "".
func checkOperationPath(path string) string {
	switch {
	case path == "":
		return "is required, for example /orders/{orderId}"
	case path[0] != '/':
		return "must start with '/'"
	case len(path) > maxPathLen:
		return fmt.Sprintf("must be at most %d characters", maxPathLen)
	case strings.ContainsAny(path, " \t\r\n?#"):
		return "must not contain spaces, '?' or '#'"
	}
	rest := path
	for {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			return ""
		}
		if rest[open] == '}' {
			return "has a '}' without a matching '{'"
		}
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] == '{' {
			return "has a '{' without a matching '}' (parameters cannot nest)"
		}
		if name := rest[open+1 : open+1+end]; !pathParamPattern.MatchString(name) {
			return fmt.Sprintf("parameter {%s} must be a name of letters, digits and '_'", name)
		}
		rest = rest[open+end+2:]
	}
}

func checkWeight(e *httpx.FieldErrors, p string, w *int) {
	if w != nil && (*w < 0 || *w > 100) {
		e.Add(p, "must be from 0 to 100")
	}
}

func checkCallback(e *httpx.FieldErrors, p string, g *store.RedirectGrant) {
	if g == nil || g.CallbackURL == "" {
		return
	}
	u, err := url.Parse(g.CallbackURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		e.Add(p, "must be an http or https URL")
	}
}

func checkScopes(e *httpx.FieldErrors, p string, scopes []string) {
	if len(scopes) > maxScopes {
		e.Add(p, "must hold at most %d scopes, not %d", maxScopes, len(scopes))
		return
	}
	for i, s := range scopes {
		if s == "" || len(s) > 256 || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			e.Add(fmt.Sprintf("%s[%d]", p, i), "must be a non-empty scope without spaces")
		}
	}
}

func checkPolicies(e *httpx.FieldErrors, p string, ps []store.Policy) {
	if len(ps) > maxPolicies {
		e.Add(p, "must hold at most %d policies, not %d", maxPolicies, len(ps))
		return
	}
	for i, pol := range ps {
		pp := fmt.Sprintf("%s[%d]", p, i)
		if !backendNamePattern.MatchString(pol.Name) {
			e.Add(pp+".name", "must be 1 to 100 characters of letters, digits, '.', '_' and '-'")
		}
		if raw := bytes.TrimSpace(pol.Params); len(raw) > 0 && raw[0] != '{' && !bytes.Equal(raw, []byte("null")) {
			e.Add(pp+".params", "must be a JSON object")
		}
	}
}

func oneOf(e *httpx.FieldErrors, p, v string, allowed []string) {
	if !slices.Contains(allowed, v) {
		e.Add(p, "must be one of %s, not %q", strings.Join(allowed, ", "), v)
	}
}

func nonNegative(e *httpx.FieldErrors, p string, v int) {
	if v < 0 {
		e.Add(p, "must not be negative")
	}
}

// Runnable refuses an API gateways would drop: they need at least one
// upstream and one operation.
func Runnable(a *store.API) error {
	for _, b := range a.BackendServices {
		if len(b.Endpoints) > 0 {
			if len(a.Operations) == 0 {
				return httpx.BadRequest("the API has no operation: gateways cannot run it; add operations and deploy again")
			}
			return nil
		}
	}
	return httpx.BadRequest("the API has no backend service with an endpoint: gateways cannot run an API without an upstream; add backend-services and deploy again")
}
