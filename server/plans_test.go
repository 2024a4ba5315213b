package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"platform-api/httpx"
)

// TestSubscriptionPlans covers the plans' REST resource: create with
// defaults, validation that stores nothing, duplicates, update, and the
// refused deletion of a plan in use.
func TestSubscriptionPlans(t *testing.T) {
	e := newEnv(t)
	f := newFleet(t, e, 0)
	_, otherTok := e.newOrg()

	var gold map[string]any
	e.must(201, "POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "gold", "displayName": "Gold",
		"requestCount": 100, "timeUnit": "minute"}, &gold)
	if gold["id"] == "" || gold["status"] != "ACTIVE" || gold["stopOnQuotaReach"] != true || gold["requestCount"] != 100.0 ||
		gold["timeUnit"] != "minute" || gold["displayName"] != "Gold" || gold["createdAt"] == nil {
		t.Fatalf("created %v", gold)
	}
	path := "/api/v1/subscription-plans/" + gold["id"].(string)

	t.Run("BadInputIs400NamingTheField", func(t *testing.T) {
		for body, field := range map[string]string{
			`{}`:              "name",
			`{"name":"Gold"}`: "name",
			`{"name":"ab"}`:   "name",
			`{"name":"a--b"}`: "name",
			`{"name":"` + strings.Repeat("a", 64) + `"}`:            "name",
			`{"name":"silver","requestCount":10}`:                   "timeUnit",
			`{"name":"silver","timeUnit":"minute"}`:                 "requestCount",
			`{"name":"silver","requestCount":0,"timeUnit":"hour"}`:  "requestCount",
			`{"name":"silver","requestCount":10,"timeUnit":"week"}`: "timeUnit",
			`{"name":"silver","status":"ON"}`:                       "status",
			`{"name":"silver","expiresAt":"tomorrow"}`:              "expiresAt",
			`{"name":"silver","expiresAt":"2001-01-01T00:00:00Z"}`:  "expiresAt",
			`{"name":"silver","stopOnQuotaReach":"yes"}`:            "stopOnQuotaReach",
			`{"name":"silver","extra":1}`:                           "extra",
		} {
			code, data := e.do("POST", "/api/v1/subscription-plans", f.tok, body)
			wantError(t, code, data, 400, field)
		}
		var l httpx.List[map[string]any]
		e.must(200, "GET", "/api/v1/subscription-plans", f.tok, nil, &l)
		if l.Count != 1 || l.Pagination.Total != 1 {
			t.Fatalf("after refusals: %+v", l)
		}
	})
	t.Run("DuplicateNameIs409", func(t *testing.T) {
		code, data := e.do("POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "gold"})
		wantError(t, code, data, 409, `"gold"`)
	})
	t.Run("Update", func(t *testing.T) {
		e.must(201, "POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "free"}, nil)
		var got map[string]any
		e.must(200, "PUT", path, f.tok, map[string]any{"requestCount": 5, "timeUnit": "day", "status": "INACTIVE"}, &got)
		if got["requestCount"] != 5.0 || got["timeUnit"] != "day" || got["status"] != "INACTIVE" || got["name"] != "gold" {
			t.Fatalf("updated %v", got)
		}
		code, data := e.do("PUT", path, f.tok, map[string]any{"name": "free"})
		wantError(t, code, data, 409, `"free"`)
		e.must(200, "GET", path, f.tok, nil, &got)
		if got["name"] != "gold" || got["requestCount"] != 5.0 {
			t.Fatalf("after a refused rename: %v", got)
		}
	})
	t.Run("NullClearsLimitAndExpiry", func(t *testing.T) {
		var got map[string]any
		e.must(200, "PUT", path, f.tok, map[string]any{"requestCount": 7, "timeUnit": "hour", "expiresAt": "2099-01-01T00:00:00Z"}, &got)
		if got["requestCount"] != 7.0 || got["expiresAt"] == nil {
			t.Fatalf("updated %v", got)
		}
		code, data := e.do("PUT", path, f.tok, `{"requestCount":null}`)
		wantError(t, code, data, 400, "timeUnit")
		got = nil // decoding into a map keeps the keys an answer leaves out
		e.must(200, "PUT", path, f.tok, `{"requestCount":null,"timeUnit":null,"expiresAt":null}`, &got)
		if _, ok := got["requestCount"]; ok || got["timeUnit"] != nil || got["expiresAt"] != nil || got["name"] != "gold" {
			t.Fatalf("after clearing: %v", got)
		}
		got = nil
		e.must(200, "GET", path, f.tok, nil, &got)
		if got["requestCount"] != nil || got["expiresAt"] != nil {
			t.Fatalf("stored after clearing: %v", got)
		}
		e.must(200, "PUT", path, f.tok, map[string]any{"requestCount": 5, "timeUnit": "day"}, &got)
	})
	t.Run("OtherOrganizationIs404", func(t *testing.T) {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			code, data := e.do(m, path, otherTok, map[string]any{"displayName": "x"})
			wantError(t, code, data, 404, "not found")
		}
		var l httpx.List[map[string]any]
		e.must(200, "GET", "/api/v1/subscription-plans", otherTok, nil, &l)
		if l.Count != 0 {
			t.Fatalf("another organization lists %v", l.List)
		}
	})
	t.Run("DeleteOfAPlanInUseIs409NamingTheSubscriptions", func(t *testing.T) {
		var sub map[string]any
		e.must(201, "POST", "/api/v1/subscriptions", f.tok, map[string]any{"apiId": f.api, "planId": gold["id"],
			"applicationId": newApp(t, e, f.tok, "app-a")}, &sub)
		code, data := e.do("DELETE", path, f.tok, nil)
		wantError(t, code, data, 409, sub["id"].(string))
		e.must(204, "DELETE", "/api/v1/subscriptions/"+sub["id"].(string), f.tok, nil, nil)
		e.must(204, "DELETE", path, f.tok, nil, nil)
		code, data = e.do("GET", path, f.tok, nil)
		wantError(t, code, data, 404, "not found")
	})
}

// TestSubscriptions covers subscriptions: the token shown only when made,
// sealed at rest, one active subscription per (API, application), filters,
// and isolation between organizations.
func TestSubscriptions(t *testing.T) {
	e := newEnv(t)
	f := newFleet(t, e, 0)
	otherOrg := newFleet(t, e, 0)
	var plan, otherPlan map[string]any
	e.must(201, "POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "gold"}, &plan)
	e.must(201, "POST", "/api/v1/subscription-plans", otherOrg.tok, map[string]any{"name": "gold"}, &otherPlan)
	app := newApp(t, e, f.tok, "app-a")

	var sub map[string]any
	e.must(201, "POST", "/api/v1/subscriptions", f.tok, map[string]any{"apiId": f.api, "applicationId": app,
		"planId": plan["id"], "subscriberId": "alice"}, &sub)
	token, _ := sub["subscriptionToken"].(string)
	if len(token) < 43 || sub["status"] != "ACTIVE" || sub["apiId"] != f.api || sub["applicationId"] != app ||
		sub["planId"] != plan["id"] || sub["subscriberId"] != "alice" {
		t.Fatalf("created %v", sub)
	}
	path := "/api/v1/subscriptions/" + sub["id"].(string)

	t.Run("TokenShownOnlyOnce", func(t *testing.T) {
		for _, p := range []string{path, "/api/v1/subscriptions", "/api/v1/subscriptions?apiId=" + f.api} {
			data := e.must(200, "GET", p, f.tok, nil, nil)
			if strings.Contains(string(data), "subscriptionToken") || strings.Contains(string(data), token) {
				t.Fatalf("GET %s shows the token: %s", p, data)
			}
		}
		rows, err := e.dbRead(`SELECT token FROM subscriptions`)
		if err != nil || len(rows) != 1 || strings.Contains(string(rows[0]), token) || !strings.HasPrefix(string(rows[0]), "enc:v1:") {
			t.Fatalf("stored token %q, %v", rows, err)
		}
	})
	t.Run("OneActivePerAPIAndApplication", func(t *testing.T) {
		code, data := e.do("POST", "/api/v1/subscriptions", f.tok, map[string]any{"apiId": f.api, "applicationId": app})
		wantError(t, code, data, 409, app)
		var inactive map[string]any
		e.must(201, "POST", "/api/v1/subscriptions", f.tok, map[string]any{"apiId": f.api, "applicationId": app,
			"status": "INACTIVE"}, &inactive)
		code, data = e.do("PUT", "/api/v1/subscriptions/"+inactive["id"].(string), f.tok, map[string]any{"status": "ACTIVE"})
		wantError(t, code, data, 409, "active subscription")
		var l httpx.List[map[string]any]
		e.must(200, "GET", "/api/v1/subscriptions?status=INACTIVE&applicationId="+app, f.tok, nil, &l)
		if l.Count != 1 || l.List[0]["id"] != inactive["id"] {
			t.Fatalf("inactive ones: %+v", l)
		}
		e.must(200, "GET", "/api/v1/subscriptions?apiId="+f.api, f.tok, nil, &l)
		if l.Count != 2 || l.Pagination.Total != 2 {
			t.Fatalf("the API's: %+v", l)
		}
		e.must(204, "DELETE", "/api/v1/subscriptions/"+inactive["id"].(string), f.tok, nil, nil)
	})
	t.Run("Regenerate", func(t *testing.T) {
		var got map[string]any
		e.must(200, "POST", path+"/regenerate-token", f.tok, nil, &got)
		if nt, _ := got["subscriptionToken"].(string); len(nt) < 43 || nt == token {
			t.Fatalf("regenerated %v", got)
		}
		data := e.must(200, "GET", path, f.tok, nil, nil)
		if strings.Contains(string(data), "subscriptionToken") {
			t.Fatalf("GET after regenerate shows the token: %s", data)
		}
	})
	t.Run("Update", func(t *testing.T) {
		var got map[string]any
		e.must(200, "PUT", path, f.tok, map[string]any{"status": "INACTIVE", "subscriberId": "bob"}, &got)
		if got["status"] != "INACTIVE" || got["subscriberId"] != "bob" || got["planId"] != plan["id"] || got["subscriptionToken"] != nil {
			t.Fatalf("updated %v", got)
		}
		code, data := e.do("PUT", path, f.tok, map[string]any{"apiId": otherOrg.api})
		wantError(t, code, data, 400, "apiId")
		code, data = e.do("PUT", path, f.tok, map[string]any{"planId": otherPlan["id"]})
		wantError(t, code, data, 400, "planId")
	})
	t.Run("BadInputIs400NamingTheField", func(t *testing.T) {
		for body, field := range map[string]string{
			`{}`:                                   "apiId",
			`{"apiId":"nope"}`:                     "apiId",
			`{"apiId":"` + otherOrg.api + `"}`:     "apiId",
			`{"apiId":"` + uuid.NewString() + `"}`: "apiId",
			`{"apiId":"` + f.api + `","planId":"` + otherPlan["id"].(string) + `"}`: "planId",
			`{"apiId":"` + f.api + `","applicationId":"x"}`:                         "applicationId",
			`{"apiId":"` + f.api + `","applicationId":"` + uuid.NewString() + `"}`:  "applicationId",
			`{"apiId":"` + f.api + `","status":"PAUSED"}`:                           "status",
		} {
			code, data := e.do("POST", "/api/v1/subscriptions", f.tok, body)
			wantError(t, code, data, 400, field)
		}
		code, data := e.do("GET", "/api/v1/subscriptions?status=on", f.tok, nil)
		wantError(t, code, data, 400, "status")
		var l httpx.List[map[string]any]
		e.must(200, "GET", "/api/v1/subscriptions", f.tok, nil, &l)
		if l.Count != 1 {
			t.Fatalf("after refusals: %+v", l)
		}
	})
	t.Run("OtherOrganizationIs404", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{{"GET", path}, {"PUT", path}, {"DELETE", path},
			{"POST", path + "/regenerate-token"}} {
			code, data := e.do(c.method, c.path, otherOrg.tok, map[string]any{"status": "ACTIVE"})
			wantError(t, code, data, 404, "not found")
		}
		var l httpx.List[map[string]any]
		e.must(200, "GET", "/api/v1/subscriptions", otherOrg.tok, nil, &l)
		if l.Count != 0 {
			t.Fatalf("another organization lists %v", l.List)
		}
	})
	t.Run("DeletedWithItsAPI", func(t *testing.T) {
		e.must(204, "DELETE", "/api/v1/apis/"+f.api, f.tok, nil, nil)
		code, data := e.do("GET", path, f.tok, nil)
		wantError(t, code, data, 404, "not found")
	})
}

// TestConsumerPulls covers what gateways pull of plans and subscriptions:
// the exact field names, only their organization's, and 403/404 for an API
// not deployed to the gateway or not the organization's.
func TestConsumerPulls(t *testing.T) {
	e := newEnv(t)
	f := newFleet(t, e, 2)
	other := newFleet(t, e, 1)
	other.deploy(t, "", 0)
	f.deploy(t, "", 0)
	var plan map[string]any
	e.must(201, "POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "gold", "displayName": "Gold",
		"requestCount": 100, "timeUnit": "minute", "stopOnQuotaReach": false, "expiresAt": "2099-01-01T00:00:00Z"}, nil)
	e.must(201, "POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "free"}, &plan)
	e.must(201, "POST", "/api/v1/subscription-plans", other.tok, map[string]any{"name": "theirs"}, nil)
	var sub map[string]any
	app := newApp(t, e, f.tok, "app-a")
	e.must(201, "POST", "/api/v1/subscriptions", f.tok, map[string]any{"apiId": f.api, "applicationId": app,
		"planId": plan["id"]}, &sub)
	e.must(201, "POST", "/api/v1/subscriptions", other.tok, map[string]any{"apiId": other.api}, nil)
	pull := func(key, path string) (int, []byte) {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		req.Header.Set("api-key", key)
		return e.send(req)
	}

	t.Run("Plans", func(t *testing.T) {
		code, data := pull(f.keys[1], "/api/internal/v1/subscription-plans")
		var plans []map[string]any
		if err := json.Unmarshal(data, &plans); code != 200 || err != nil || len(plans) != 2 {
			t.Fatalf("plans = %d %s", code, data)
		}
		gold := plans[0]
		for k, want := range map[string]any{"handle": "gold", "planName": "gold", "stopOnQuotaReach": false,
			"throttleLimitCount": 100.0, "throttleLimitUnit": "Min", "status": "ACTIVE", "expiryTime": "2099-01-01T00:00:00Z"} {
			if gold[k] != want {
				t.Errorf("%s = %v, want %v (%v)", k, gold[k], want, gold)
			}
		}
		for _, k := range []string{"id", "createdAt", "updatedAt", "etag"} {
			if gold[k] == nil || gold[k] == "" {
				t.Errorf("%s missing: %v", k, gold)
			}
		}
		if _, ok := plans[1]["throttleLimitUnit"]; ok || plans[1]["planName"] != "free" {
			t.Errorf("a plan without a limit: %v", plans[1])
		}
	})
	t.Run("Subscriptions", func(t *testing.T) {
		code, data := pull(f.keys[0], "/api/internal/v1/apis/"+f.api+"/subscriptions")
		var subs []map[string]any
		if err := json.Unmarshal(data, &subs); code != 200 || err != nil || len(subs) != 1 {
			t.Fatalf("subscriptions = %d %s", code, data)
		}
		s := subs[0]
		for k, want := range map[string]any{"id": sub["id"], "apiId": f.api, "applicationId": app,
			"subscriptionToken": sub["subscriptionToken"], "subscriptionPlanId": plan["id"], "status": "ACTIVE"} {
			if s[k] != want {
				t.Errorf("%s = %v, want %v", k, s[k], want)
			}
		}
		if s["etag"] == nil || s["createdAt"] == nil || s["updatedAt"] == nil {
			t.Errorf("missing fields: %v", s)
		}
		code, data = pull(f.keys[1], "/api/internal/v1/apis/"+f.api+"/subscriptions")
		wantError(t, code, data, 403, "not deployed")
		code, data = pull(f.keys[0], "/api/internal/v1/apis/"+uuid.NewString()+"/subscriptions")
		wantError(t, code, data, 404, "not found")
		code, data = pull(f.keys[0], "/api/internal/v1/apis/"+other.api+"/subscriptions")
		wantError(t, code, data, 404, "not found")
	})
}

// TestSecretResources covers secrets: never a value in an answer or in
// clear in the database, a new hash for a new value, a refused deletion
// naming the APIs that refer to it, and what gateways may pull: only the
// secrets referred to by APIs deployed to them, values only on request.
func TestSecretResources(t *testing.T) {
	e := newEnv(t)
	f := newFleet(t, e, 2)
	other := newFleet(t, e, 1)
	const value = "s3cr3t-backend-password"

	var sec map[string]any
	e.must(201, "POST", "/api/v1/secrets", f.tok, map[string]any{"name": "backend-pass", "value": value,
		"description": "the backend's password"}, &sec)
	if _, ok := sec["value"]; ok || sec["hash"] == "" || sec["name"] != "backend-pass" || sec["id"] == "" {
		t.Fatalf("created %v", sec)
	}
	e.must(201, "POST", "/api/v1/secrets", f.tok, map[string]any{"name": "unused", "value": "other-value"}, nil)
	e.must(201, "POST", "/api/v1/secrets", other.tok, map[string]any{"name": "backend-pass", "value": "theirs"}, nil)

	t.Run("NeverTheValue", func(t *testing.T) {
		for _, p := range []string{"/api/v1/secrets", "/api/v1/secrets/backend-pass"} {
			data := e.must(200, "GET", p, f.tok, nil, nil)
			if strings.Contains(string(data), value) || strings.Contains(string(data), `"value"`) {
				t.Fatalf("GET %s shows the value: %s", p, data)
			}
		}
		rows, err := e.dbRead(`SELECT value FROM secrets`)
		if err != nil || len(rows) != 3 {
			t.Fatalf("stored %q, %v", rows, err)
		}
		for _, r := range rows {
			if !strings.HasPrefix(string(r), "enc:v1:") || strings.Contains(string(r), value) {
				t.Fatalf("stored value %q", r)
			}
		}
	})
	t.Run("BadInputIs400NamingTheField", func(t *testing.T) {
		for body, field := range map[string]string{
			`{"value":"x"}`:                   "name",
			`{"name":"Bad Name","value":"x"}`: "name",
			`{"name":"ok-name"}`:              "value",
			`{"name":"ok-name","value":""}`:   "value",
			`{"name":"ok-name","value":7}`:    "value",
		} {
			code, data := e.do("POST", "/api/v1/secrets", f.tok, body)
			wantError(t, code, data, 400, field)
		}
		code, data := e.do("POST", "/api/v1/secrets", f.tok, map[string]any{"name": "backend-pass", "value": "x"})
		wantError(t, code, data, 409, `"backend-pass"`)
		var l httpx.List[map[string]any]
		e.must(200, "GET", "/api/v1/secrets", f.tok, nil, &l)
		if l.Count != 2 {
			t.Fatalf("after refusals: %+v", l)
		}
	})
	t.Run("NewValueNewHash", func(t *testing.T) {
		var got map[string]any
		e.must(200, "PUT", "/api/v1/secrets/unused", f.tok, map[string]any{"value": "changed"}, &got)
		var before map[string]any
		e.must(200, "PUT", "/api/v1/secrets/unused", f.tok, map[string]any{"description": "only this"}, &before)
		if got["hash"] == "" || before["hash"] != got["hash"] || before["description"] != "only this" {
			t.Fatalf("description change moved the hash: %v then %v", got, before)
		}
		e.must(200, "PUT", "/api/v1/secrets/unused", f.tok, map[string]any{"value": "changed"}, &got)
		if got["hash"] == before["hash"] {
			t.Fatalf("a new value kept the hash %v", got["hash"])
		}
		code, data := e.do("PUT", "/api/v1/secrets/unused", f.tok, map[string]any{"name": "renamed", "value": "x"})
		wantError(t, code, data, 400, "name")
	})

	t.Run("DeployReferringToAMissingSecretIs400", func(t *testing.T) {
		e.must(200, "PUT", "/api/v1/apis/"+f.api, f.tok, map[string]any{"description": `password: {{ secret "no-such" }}`}, nil)
		items := []map[string]any{{"gatewayId": f.gws[0].ID, "vhost": "api.example.com"}}
		code, data := e.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, items)
		wantError(t, code, data, 400, `"no-such"`)
		if !strings.Contains(string(data), "description") {
			t.Fatalf("the refusal does not name the field: %s", data)
		}
		rows, err := e.dbRead(`SELECT api_id FROM deployments`)
		if err != nil || len(rows) != 0 {
			t.Fatalf("deployments after the refusal: %q, %v", rows, err)
		}
		rows, err = e.dbRead(`SELECT id FROM api_revisions`)
		if err != nil || len(rows) != 0 {
			t.Fatalf("revisions after the refusal: %q, %v", rows, err)
		}
	})

	// The API refers to the secret, and is deployed to gateway 0 only.
	e.must(200, "PUT", "/api/v1/apis/"+f.api, f.tok, map[string]any{"description": `password: {{ secret "backend-pass" }}`}, nil)
	f.deploy(t, "", 0)
	pull := func(key, path string) (int, []byte) {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		req.Header.Set("api-key", key)
		return e.send(req)
	}
	type secretList struct {
		List  []map[string]any `json:"list"`
		Count int              `json:"count"`
	}

	t.Run("DeleteOfASecretInUseIs409NamingTheAPIs", func(t *testing.T) {
		code, data := e.do("DELETE", "/api/v1/secrets/backend-pass", f.tok, nil)
		wantError(t, code, data, 409, f.api)
		e.must(204, "DELETE", "/api/v1/secrets/unused", f.tok, nil, nil)
		e.must(201, "POST", "/api/v1/secrets", f.tok, map[string]any{"name": "unused", "value": "other-value"}, nil)
	})
	t.Run("GatewayPullsOnlyWhatItsAPIsReferTo", func(t *testing.T) {
		var l secretList
		code, data := pull(f.keys[0], "/api/internal/v1/secrets")
		if err := json.Unmarshal(data, &l); code != 200 || err != nil || l.Count != 1 || len(l.List) != 1 {
			t.Fatalf("secrets = %d %s", code, data)
		}
		s := l.List[0]
		for k, want := range map[string]any{"uuid": sec["id"], "handle": "backend-pass", "name": "backend-pass",
			"status": "ACTIVE", "hash": sec["hash"]} {
			if s[k] != want {
				t.Errorf("%s = %v, want %v", k, s[k], want)
			}
		}
		if _, ok := s["value"]; ok || s["type"] == nil || s["provider"] == nil || s["createdAt"] == nil || s["updatedAt"] == nil {
			t.Errorf("without values: %v", s)
		}
		code, data = pull(f.keys[0], "/api/internal/v1/secrets?includeValues=true")
		if err := json.Unmarshal(data, &l); code != 200 || err != nil || l.Count != 1 || l.List[0]["value"] != value {
			t.Fatalf("with values = %d %s", code, data)
		}
		code, data = pull(f.keys[0], "/api/internal/v1/secrets?includeValues=true&updatedAfter=2099-01-01T00:00:00Z")
		if err := json.Unmarshal(data, &l); code != 200 || err != nil || l.Count != 0 || l.List == nil {
			t.Fatalf("updated after 2099 = %d %s", code, data)
		}
		code, data = pull(f.keys[0], "/api/internal/v1/secrets/backend-pass/value")
		if code != 200 || strings.TrimSpace(string(data)) != `{"value":"`+value+`"}` {
			t.Fatalf("value = %d %s", code, data)
		}
		code, data = pull(f.keys[0], "/api/internal/v1/secrets/unused/value")
		wantError(t, code, data, 404, "not found")
		code, data = pull(f.keys[0], "/api/internal/v1/secrets?includeValues=maybe")
		wantError(t, code, data, 400, "includeValues")

		// Gateway 1 runs nothing; the other organization's gateway runs
		// its API, which refers to nothing.
		for _, key := range []string{f.keys[1], other.keys[0]} {
			code, data = pull(key, "/api/internal/v1/secrets?includeValues=true")
			if err := json.Unmarshal(data, &l); code != 200 || err != nil || l.Count != 0 {
				t.Fatalf("another gateway's secrets = %d %s", code, data)
			}
			code, data = pull(key, "/api/internal/v1/secrets/backend-pass/value")
			wantError(t, code, data, 404, "not found")
		}
	})
	t.Run("OtherOrganizationIs404", func(t *testing.T) {
		e.must(201, "POST", "/api/v1/secrets", other.tok, map[string]any{"name": "only-theirs", "value": "x"}, nil)
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			code, data := e.do(m, "/api/v1/secrets/only-theirs", f.tok, map[string]any{"value": "mine"})
			wantError(t, code, data, 404, "not found")
		}
	})
	t.Run("UndeployedAndUnreferencedItCanGo", func(t *testing.T) {
		e.must(200, "PUT", "/api/v1/apis/"+f.api, f.tok, map[string]any{"description": "no secret"}, nil)
		code, data := e.do("DELETE", "/api/v1/secrets/backend-pass", f.tok, nil)
		wantError(t, code, data, 409, f.api) // the deployed revision still refers to it
		e.must(204, "DELETE", "/api/v1/apis/"+f.api+"/deployments/"+f.gws[0].ID, f.tok, nil, nil)
		e.must(204, "DELETE", "/api/v1/secrets/backend-pass", f.tok, nil, nil)
		var l secretList
		code, data = pull(f.keys[0], "/api/internal/v1/secrets")
		if err := json.Unmarshal(data, &l); code != 200 || err != nil || l.Count != 0 {
			t.Fatalf("after the undeploy = %d %s", code, data)
		}
	})
}

// expectEvents reads the gateway's next events, handling each api.* one as
// the gateway does (download, acknowledgement), and checks their types are
// exactly want, in order. It returns them.
func expectEvents(t *testing.T, g *gen2Gateway, want ...string) []map[string]any {
	t.Helper()
	var got []map[string]any
	var types []string
	for range want {
		ev := g.next(5 * time.Second)
		got = append(got, ev)
		types = append(types, ev["type"].(string))
	}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", types, want)
	}
	return got
}

// TestPlanAndSubscriptionEvents: plans reach every second-generation
// gateway of the organization, subscriptions only the gateways their API
// is deployed to, after its api.deployed and after their plan, with the
// field names of §7, token in plain.
func TestPlanAndSubscriptionEvents(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	var gold, silver, early, sub map[string]any
	e.must(201, "POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "gold", "displayName": "Gold",
		"requestCount": 10, "timeUnit": "hour"}, &gold)
	e.must(201, "POST", "/api/v1/subscriptions", f.tok, map[string]any{"apiId": f.api, "planId": gold["id"],
		"applicationId": newApp(t, e, f.tok, "app-a")}, &early)
	g0, g1 := newGen2(t, e, f.keys[0], f.gws[0].ID), newGen2(t, e, f.keys[1], f.gws[1].ID)
	g0.connect()
	g1.connect()
	// A new connection's consumer events wait for its key pull, as a real
	// gateway makes on every connect.
	for _, g := range []*gen2Gateway{g0, g1} {
		if code, data := g.call("GET", "/api/internal/v1/apis/api-keys", ""); code != 200 {
			t.Fatalf("key pull = %d %s", code, data)
		}
	}

	// Made before the deploy: the plan, then the subscription, follow the
	// API's api.deployed.
	f.deploy(t, "", 0)
	evs := expectEvents(t, g0, "api.deployed", "subscriptionPlan.created", "subscription.created")
	plan := evs[1]["payload"].(map[string]any)
	for k, want := range map[string]any{"planId": gold["id"], "handle": "gold", "planName": "gold", "billingPlan": "free",
		"stopOnQuotaReach": true, "throttleLimitCount": 10.0, "throttleLimitUnit": "Hour", "status": "ACTIVE"} {
		if plan[k] != want {
			t.Errorf("plan %s = %v, want %v", k, plan[k], want)
		}
	}
	s := evs[2]["payload"].(map[string]any)
	for k, want := range map[string]any{"apiId": f.api, "subscriptionId": early["id"], "applicationId": early["applicationId"],
		"subscriptionToken": early["subscriptionToken"], "subscriptionPlanId": gold["id"], "status": "ACTIVE"} {
		if s[k] != want {
			t.Errorf("subscription %s = %v, want %v", k, s[k], want)
		}
	}

	// Live: a plan goes to both gateways, its subscription to gateway 0 only.
	e.must(201, "POST", "/api/v1/subscription-plans", f.tok, map[string]any{"name": "silver", "displayName": "Silver"}, &silver)
	e.must(201, "POST", "/api/v1/subscriptions", f.tok, map[string]any{"apiId": f.api, "planId": silver["id"],
		"applicationId": newApp(t, e, f.tok, "app-b")}, &sub)
	evs = expectEvents(t, g0, "subscriptionPlan.created", "subscription.created")
	if p := evs[0]["payload"].(map[string]any); p["planName"] != "silver" || p["throttleLimitUnit"] != nil {
		t.Errorf("silver %v", p)
	}
	if p := evs[1]["payload"].(map[string]any); p["subscriptionToken"] != sub["subscriptionToken"] || p["subscriptionPlanId"] != silver["id"] {
		t.Errorf("live subscription %v", p)
	}
	var regen map[string]any
	e.must(200, "POST", "/api/v1/subscriptions/"+sub["id"].(string)+"/regenerate-token", f.tok, nil, &regen)
	e.must(200, "PUT", "/api/v1/subscriptions/"+sub["id"].(string), f.tok, map[string]any{"status": "INACTIVE"}, nil)
	e.must(204, "DELETE", "/api/v1/subscriptions/"+sub["id"].(string), f.tok, nil, nil)
	e.must(204, "DELETE", "/api/v1/subscription-plans/"+silver["id"].(string), f.tok, nil, nil)
	evs = expectEvents(t, g0, "subscription.updated", "subscription.updated", "subscription.deleted", "subscriptionPlan.deleted")
	if p := evs[0]["payload"].(map[string]any); p["subscriptionToken"] != regen["subscriptionToken"] || p["status"] != "ACTIVE" {
		t.Errorf("regenerated %v", p)
	}
	if p := evs[1]["payload"].(map[string]any); p["subscriptionToken"] != regen["subscriptionToken"] || p["status"] != "INACTIVE" {
		t.Errorf("updated %v", p)
	}
	if p := evs[3]["payload"].(map[string]any); p["planId"] != silver["id"] || p["planName"] != "silver" {
		t.Errorf("deleted plan %v", p)
	}
	// Gateway 1 runs no API: plans only.
	expectEvents(t, g1, "subscriptionPlan.created", "subscriptionPlan.deleted")

	// Deleting an application deletes its subscriptions.
	e.must(204, "DELETE", "/api/v1/applications/"+early["applicationId"].(string), f.tok, nil, nil)
	evs = expectEvents(t, g0, "subscription.deleted")
	if p := evs[0]["payload"].(map[string]any); p["subscriptionId"] != early["id"] {
		t.Errorf("deleted with its application: %v", p)
	}
	code, data := e.do("GET", "/api/v1/subscriptions/"+early["id"].(string), f.tok, nil)
	wantError(t, code, data, 404, "not found")

	// An API that asks for subscriptions needs the policy on the gateway:
	// gateway 1's manifest lacks it, so the deploy is refused.
	e.must(200, "PUT", "/api/v1/apis/"+f.api, f.tok, map[string]any{"subscriptionValidation": true}, nil)
	code, data = e.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok,
		[]map[string]any{{"gatewayId": f.gws[1].ID, "vhost": "api.example.com"}})
	wantError(t, code, data, 409, "subscription-validation")
}

// TestSubscriptionValidationField: the API's subscriptionValidation is
// stored, answered, changed by PUT and kept by a PUT that leaves it out.
func TestSubscriptionValidationField(t *testing.T) {
	e := newEnv(t)
	f := newFleet(t, e, 0)
	path := "/api/v1/apis/" + f.api
	var a map[string]any
	e.must(200, "GET", path, f.tok, nil, &a)
	if a["subscriptionValidation"] != false {
		t.Fatalf("default subscriptionValidation = %v", a["subscriptionValidation"])
	}
	e.must(200, "PUT", path, f.tok, map[string]any{"subscriptionValidation": true}, &a)
	if a["subscriptionValidation"] != true {
		t.Fatalf("after PUT: %v", a["subscriptionValidation"])
	}
	e.must(200, "PUT", path, f.tok, map[string]any{"description": "still"}, nil)
	e.must(200, "GET", path, f.tok, nil, &a)
	if a["subscriptionValidation"] != true {
		t.Fatalf("a PUT without it changed it: %v", a["subscriptionValidation"])
	}
	code, data := e.do("PUT", path, f.tok, map[string]any{"subscriptionValidation": "yes"})
	wantError(t, code, data, 400, "subscriptionValidation")
}

// newApp registers an application of the organization and returns its id.
func newApp(t *testing.T, e *testEnv, tok, name string) string {
	t.Helper()
	var app map[string]any
	e.must(201, "POST", "/api/v1/applications", tok, map[string]any{"name": name}, &app)
	return app["id"].(string)
}
