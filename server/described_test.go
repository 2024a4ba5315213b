package server

import (
	"encoding/json"
	"fmt"
	"mime"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"platform-api/api"
)

// Every request the handler tests send through send (do, must, raw) and
// every answer they get are checked against our own description
// (api/openapi.yaml), with the library's schema validator: a request that
// was accepted (2xx) must fit the operation's request schema, a 2xx answer
// must be one the operation describes and fit its schema, and every error
// answer must be the error shape. Routes the description does not hold
// are left to TestDescriptionComplete, which names them.

type describedRoute struct {
	method, path string
	re           *regexp.Regexp
	params       int
	op           *openapi3.Operation
}

var described = sync.OnceValues(func() ([]describedRoute, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.Description())
	if err != nil {
		return nil, err
	}
	var out []describedRoute
	for path, item := range doc.Paths.Map() {
		expr := "^" + regexp.MustCompile(`\\\{[^}]*\\\}`).ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$"
		for method, op := range item.Operations() {
			out = append(out, describedRoute{method, path, regexp.MustCompile(expr), strings.Count(path, "{"), op})
		}
	}
	// Literal segments win over parameters (/apis/import-openapi over
	// /apis/{apiId}).
	sort.Slice(out, func(i, j int) bool { return out[i].params < out[j].params })
	return out, nil
})

// checkDescribed validates one exchange; problems fail t.
func checkDescribed(t testing.TB, method, path string, reqBody []byte, code int, contentType string, body []byte) {
	t.Helper()
	routes, err := described()
	if err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	path, _, _ = strings.Cut(path, "?")
	var route *describedRoute
	for i := range routes {
		if routes[i].method == method && routes[i].re.MatchString(path) {
			route = &routes[i]
			break
		}
	}
	if route == nil {
		return
	}
	where := fmt.Sprintf("%s %s (described as %s %s)", method, path, route.method, route.path)
	opts := []openapi3.SchemaValidationOption{openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()}
	if code/100 == 2 && len(reqBody) > 0 && route.op.RequestBody != nil && route.op.RequestBody.Value != nil {
		if mt := route.op.RequestBody.Value.Content.Get("application/json"); mt != nil && mt.Schema != nil && json.Valid(reqBody) {
			var v any
			json.Unmarshal(reqBody, &v)
			if err := mt.Schema.Value.VisitJSON(v, append(opts, openapi3.VisitAsRequest())...); err != nil {
				t.Errorf("%s: the request body accepted does not fit the description: %v\n%s", where, err, shorten(reqBody))
			}
		}
	}
	mediaType, _, _ := mime.ParseMediaType(contentType)
	if code >= 400 {
		if mediaType != "application/json" {
			return
		}
		var e struct {
			Code        *int    `json:"code"`
			Message     *string `json:"message"`
			Description *string `json:"description"`
		}
		if json.Unmarshal(body, &e) != nil || e.Code == nil || *e.Code != code || e.Message == nil || e.Description == nil {
			t.Errorf("%s: answer %d is not the error shape: %s", where, code, shorten(body))
		}
		return
	}
	resp := route.op.Responses.Value(strconv.Itoa(code))
	if resp == nil {
		resp = route.op.Responses.Default()
	}
	if resp == nil || resp.Value == nil {
		t.Errorf("%s: answer %d is not described", where, code)
		return
	}
	if len(body) == 0 || mediaType != "application/json" {
		return
	}
	mt := resp.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		t.Errorf("%s: answer %d is JSON, which the description does not say", where, code)
		return
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Errorf("%s: answer %d is not JSON: %v", where, code, err)
		return
	}
	if err := mt.Schema.Value.VisitJSON(v, append(opts, openapi3.VisitAsResponse())...); err != nil {
		t.Errorf("%s: answer %d does not fit the description: %v\n%s", where, code, err, shorten(body))
	}
}

func shorten(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}
