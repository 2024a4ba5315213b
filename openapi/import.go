// Package openapi turns an OpenAPI document (Swagger 2.0, OpenAPI 3.0.x
// and 3.1.x, in YAML or JSON) into an API definition of ours, and makes a
// document for an API that has none. Parsing and $ref resolution are
// kin-openapi's; this package bounds what reaches it (size, nesting, YAML
// aliases, external $refs) and maps the result onto store.API.
//
// Nothing here reads a file or a URL: external $refs are refused before
// the library sees the document, and the library's loader is given a
// reader that refuses everything.
package openapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"

	"platform-api/httpx"
	"platform-api/store"
)

// DefaultMaxBytes is the default size limit of an imported document
// (PLATFORM_MAX_OPENAPI_BYTES).
const DefaultMaxBytes = 10 << 20

// Overrides replace what would be derived from the document; empty ones
// are derived.
type Overrides struct {
	Name, Version, Context, BackendURL string
}

// Result is an imported document: the API it becomes (defaults not yet
// applied, no project), the document's OpenAPI version, and what was left
// out of it.
type Result struct {
	API      *store.API
	Version  string   // the swagger or openapi field
	Warnings []string // operations and schemes that have no place in our model
}

// methods are the operations of a path item we have a place for, in the
// order a path's operations are listed.
var methods = []string{"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH"}

// Import parses data and derives the API it describes. A document that
// cannot become an API is a 400 listing the problems with their location.
// ctx bounds the work (the request's context).
func Import(ctx context.Context, data []byte, o Overrides) (*Result, error) {
	return parse(ctx, data, o, false)
}

// ImportOperations parses data for its operations only (PUT
// /apis/{apiId}/openapi replaces them and keeps the rest): no name,
// version or server is needed. The API of the result holds operations and
// nothing else.
func ImportOperations(ctx context.Context, data []byte) (*Result, error) {
	return parse(ctx, data, Overrides{}, true)
}

func parse(ctx context.Context, data []byte, o Overrides, opsOnly bool) (res *Result, err error) {
	sc, probs := prescan(data)
	if probs != nil {
		return nil, invalid(probs)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer func() {
		// The library is given only documents that passed prescan, but a
		// panic on some odd input must still be the client's 400, never a
		// dead request.
		if r := recover(); r != nil {
			res, err = nil, httpx.BadRequest("the document could not be read by the OpenAPI parser (%s); check it with an OpenAPI validator", shorten(fmt.Sprint(r), 200))
		}
	}()
	doc, err := load(ctx, data, sc)
	if err != nil {
		return nil, err
	}
	if opsOnly {
		probs := &Problems{}
		ops, warnings := operations(doc, probs)
		if len(ops) == 0 && probs.Len() == 0 {
			probs.Add("/paths", 0, "holds no operation that can become one of ours (methods %s)", strings.Join(methods, ", "))
		}
		if probs.Len() > 0 {
			return nil, invalid(probs)
		}
		return &Result{API: &store.API{Operations: ops}, Version: sc.version, Warnings: warnings}, nil
	}
	a, warnings, probs := derive(doc, sc, o)
	if probs.Len() > 0 {
		return nil, invalid(probs)
	}
	return &Result{API: a, Version: sc.version, Warnings: warnings}, nil
}

func invalid(p *Problems) error {
	return httpx.BadRequest("the OpenAPI document cannot become an API: %s", p.String())
}

// refuseAll is the loader's reader: the document is all there is.
func refuseAll(_ *openapi3.Loader, u *url.URL) ([]byte, error) {
	return nil, fmt.Errorf("$ref %q points outside the document, and this server never fetches files or URLs", u.String())
}

func newLoader(ctx context.Context) *openapi3.Loader {
	l := openapi3.NewLoader()
	l.Context = ctx
	l.IsExternalRefsAllowed = false
	l.ReadFromURIFunc = refuseAll
	return l
}

// load gives the document to the library: Swagger 2.0 is converted to
// OpenAPI 3 (servers from schemes, host and basePath).
func load(ctx context.Context, data []byte, sc *scan) (*openapi3.T, error) {
	if sc.swagger {
		var d2 openapi2.T
		if err := openapi2.UnmarshalFromData(data, &d2); err != nil {
			return nil, libraryError(err)
		}
		doc, err := openapi2conv.ToV3WithLoader(&d2, newLoader(ctx), nil)
		if err != nil {
			return nil, libraryError(err)
		}
		return doc, nil
	}
	doc, err := newLoader(ctx).LoadFromData(data)
	if err != nil {
		return nil, libraryError(err)
	}
	return doc, nil
}

func libraryError(err error) error {
	var ext *openapi3.DisallowedExternalRefError
	if errors.As(err, &ext) {
		return httpx.BadRequest("the OpenAPI document cannot become an API: $ref %q points outside the document: this server never fetches files or URLs", shorten(ext.Ref, 200))
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return httpx.BadRequest("the OpenAPI document cannot be read: %s", shorten(err.Error(), 500))
}

// derive maps the document onto an API.
func derive(doc *openapi3.T, sc *scan, o Overrides) (*store.API, []string, *Problems) {
	probs := &Problems{}
	var warnings []string
	a := &store.API{}

	var title, version string
	if doc.Info != nil {
		title, version = doc.Info.Title, doc.Info.Version
		a.Description = cut(keepLines(strings.TrimSpace(doc.Info.Description)), 4096)
	}
	a.Name = o.Name
	if a.Name == "" {
		a.Name = NormalizeName(title)
		if a.Name == "" {
			probs.Add("/info/title", 0, "gives no usable API name (%q); send ?name=", shorten(title, 100))
		}
	}
	if t := stripControl(strings.TrimSpace(title)); t != "" && t != a.Name {
		a.DisplayName = cut(t, 200)
	}
	a.Version = o.Version
	if a.Version == "" {
		a.Version = NormalizeVersion(version)
		if a.Version == "" {
			probs.Add("/info/version", 0, "gives no usable version (%q: it needs a number, as in 1.2.0); send ?version=", shorten(version, 100))
		}
	}

	found, serverPath, where := firstServer(doc, sc)
	backend := o.BackendURL
	if backend == "" {
		backend = found
		if backend == "" {
			probs.Add(where, 0, "names no absolute http(s) server URL to use as the backend; send ?backendUrl=https://…")
		}
	}
	if backend != "" {
		a.BackendServices = []store.BackendService{{Name: "default", IsDefault: true, Endpoints: []store.Endpoint{{URL: backend}}}}
	}

	a.Context = o.Context
	if a.Context == "" {
		a.Context = strings.TrimRight(serverPath, "/")
		if a.Context == "" {
			a.Context = ContextFromName(a.Name)
		}
	}

	a.Security, warnings = security(doc, warnings)

	ops, w := operations(doc, probs)
	a.Operations = ops
	warnings = append(warnings, w...)
	if len(ops) == 0 {
		probs.Add("/paths", 0, "holds no operation that can become one of ours (methods %s)", strings.Join(methods, ", "))
	}
	return a, warnings, probs
}

// operations lists one operation per path × method, paths sorted, methods
// in the order of the methods list. Methods we have no place for (TRACE,
// QUERY and others) are left out with a warning.
func operations(doc *openapi3.T, probs *Problems) ([]store.Operation, []string) {
	if doc.Paths == nil {
		return nil, nil
	}
	var ops []store.Operation
	var warnings []string
	pm := doc.Paths.Map()
	paths := make([]string, 0, len(pm))
	for p := range pm {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		item := pm[p]
		if item == nil {
			continue
		}
		byMethod := item.Operations()
		others := make([]string, 0)
		for m := range byMethod {
			if !slices.Contains(methods, strings.ToUpper(m)) {
				others = append(others, strings.ToUpper(m))
			}
		}
		sort.Strings(others)
		for _, m := range others {
			warnings = append(warnings, fmt.Sprintf("%s %s: left out, gateways serve only %s", m, p, strings.Join(methods, ", ")))
		}
		for _, m := range methods {
			op := byMethod[m]
			if op == nil {
				continue
			}
			if !strings.HasPrefix(p, "/") {
				probs.Add(Pointer("paths", p), 0, "a path must start with '/'")
				continue
			}
			name := strings.TrimSpace(op.OperationID)
			if name == "" {
				name = m + " " + p
			}
			desc := strings.TrimSpace(op.Summary)
			if desc == "" {
				desc = strings.TrimSpace(op.Description)
			}
			ops = append(ops, store.Operation{
				Name:        cut(stripControl(name), 200),
				Description: cut(keepLines(desc), 4096),
				Request:     &store.OperationRequest{Method: m, Path: p},
			})
		}
	}
	return ops, warnings
}

// firstServer returns the first server whose URL, variables replaced by
// their defaults, is an absolute http(s) URL, and that URL's path; or the
// location to blame when there is none, and the path of the first
// relative server URL (the context, with a backendUrl given).
func firstServer(doc *openapi3.T, sc *scan) (backend, path, where string) {
	where = "/servers"
	if sc.swagger {
		where = "/host"
	}
	relative := ""
	for _, s := range doc.Servers {
		if s == nil {
			continue
		}
		raw := s.URL
		for name, v := range s.Variables {
			if v != nil {
				raw = strings.ReplaceAll(raw, "{"+name+"}", v.Default)
			}
		}
		u, err := url.Parse(raw)
		if err == nil && u.Scheme == "" && u.Host == "" && strings.HasPrefix(u.Path, "/") && relative == "" {
			relative = u.Path
		}
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil || strings.ContainsAny(raw, "{}") {
			continue
		}
		u.RawQuery, u.Fragment = "", ""
		return strings.TrimRight(u.String(), "/"), u.Path, ""
	}
	return "", relative, where
}

// security turns the first apiKey scheme in a header or query (the one the
// document's top-level security names, else the first by name) into ours.
func security(doc *openapi3.T, warnings []string) (*store.Security, []string) {
	if doc.Components == nil || len(doc.Components.SecuritySchemes) == 0 {
		return nil, warnings
	}
	var names []string
	for _, req := range doc.Security {
		for name := range req {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var all []string
	for name := range doc.Components.SecuritySchemes {
		all = append(all, name)
	}
	sort.Strings(all)
	names = append(names, all...)
	for _, name := range names {
		ref := doc.Components.SecuritySchemes[name]
		if ref == nil || ref.Value == nil || !strings.EqualFold(ref.Value.Type, "apiKey") {
			continue
		}
		s := ref.Value
		key := &store.APIKey{Enabled: true}
		switch strings.ToLower(s.In) {
		case "header":
			key.Header = s.Name
		case "query":
			key.Query = s.Name
		default:
			warnings = append(warnings, fmt.Sprintf("security scheme %s: an API key in %q is not supported (header or query only); left out", name, s.In))
			continue
		}
		return &store.Security{Enabled: true, APIKey: key}, warnings
	}
	return nil, warnings
}

var (
	nameDisallowed = regexp.MustCompile(`[^A-Za-z0-9 ._-]+`)
	spaces         = regexp.MustCompile(`\s+`)
	versionDigits  = regexp.MustCompile(`\d+`)
	contextUnsafe  = regexp.MustCompile(`[^a-z0-9._-]+`)
	dashes         = regexp.MustCompile(`-{2,}`)
)

// NormalizeName makes an API name of ours from a title: every run of
// characters outside letters, digits, space, '.', '_' and '-' becomes one
// space, spaces are collapsed and trimmed, and the result is cut to 100
// characters. "Swagger Petstore (v2)" → "Swagger Petstore v2".
func NormalizeName(title string) string {
	n := nameDisallowed.ReplaceAllString(title, " ")
	n = strings.TrimSpace(spaces.ReplaceAllString(n, " "))
	return strings.TrimSpace(cut(n, 100))
}

// NormalizeVersion makes a version of ours (v?N(.N(.N)?)?) from
// info.version: its first three runs of digits, joined by dots, with a
// leading "v" kept. "1.0.0-beta" → "1.0.0", "v2" → "v2", "2023-01-15" →
// "2023.01.15"; no digit at all gives "".
func NormalizeVersion(v string) string {
	v = strings.TrimSpace(v)
	groups := versionDigits.FindAllString(v, 3)
	if len(groups) == 0 {
		return ""
	}
	for i, g := range groups {
		if len(g) > 18 {
			groups[i] = g[:18]
		}
	}
	out := strings.Join(groups, ".")
	if strings.HasPrefix(strings.ToLower(v), "v") {
		out = "v" + out
	}
	return out
}

// ContextFromName makes a context from a name: "/" and the name in lower
// case, spaces as '-' (one for a run), other characters dropped.
// "Swagger Petstore - OpenAPI 3.0" → "/swagger-petstore-openapi-3.0".
func ContextFromName(name string) string {
	c := strings.ReplaceAll(strings.ToLower(name), " ", "-")
	c = strings.Trim(dashes.ReplaceAllString(contextUnsafe.ReplaceAllString(c, ""), "-"), "-.")
	if c == "" {
		return "/api"
	}
	return "/" + cut(c, 199)
}

func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}

func stripControl(s string) string {
	return strings.Map(func(r rune) rune {
		if httpx.IsControl(r) || r == '\n' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

// keepLines drops the control characters free text may not hold, keeping
// newlines and tabs.
func keepLines(s string) string {
	return strings.Map(func(r rune) rune {
		if httpx.IsControl(r) {
			return -1
		}
		return r
	}, s)
}
