package store

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"platform-api/store/pgtest"
)

// TestAfterKeysPulledFollowsTheGateway: what a gateway's connections are
// sent after its key pull is application.updated for exactly the
// applications with an active key on an API deployed to it, each with its
// complete key set; none for keys of APIs deployed elsewhere, undeployed
// or expired, nor of another organization. On SQLite the read starts from
// the gateway's deployments: it once scanned every key of the
// organization and filtered afterwards, so its cost followed the
// organization's size, not what the gateway runs.
func TestAfterKeysPulledFollowsTheGateway(t *testing.T) {
	ctx := context.Background()
	db := MustOpen(t)
	o, other := mustOrg(t, db), mustOrg(t, db)
	gw, elsewhere := mustGateway(t, db, o.ID, "gw"), mustGateway(t, db, o.ID, "elsewhere")
	deployed, notHere, undeployed := mustAPI(t, db, o.ID), mustAPI(t, db, o.ID), mustAPI(t, db, o.ID)
	deploy := func(org, api string, gws ...*Gateway) {
		t.Helper()
		var to []DeployTarget
		for _, g := range gws {
			to = append(to, DeployTarget{GatewayID: g.ID})
		}
		if _, _, err := db.Deploy(ctx, org, api, "", to, func(*Revision) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	deploy(o.ID, deployed, gw, elsewhere)
	deploy(o.ID, notHere, elsewhere)
	deploy(o.ID, undeployed, gw)
	if _, err := db.Undeploy(ctx, o.ID, undeployed, gw.ID); err != nil {
		t.Fatal(err)
	}
	app := func(org, name string) string {
		t.Helper()
		a := &Application{OrganizationID: org, Name: name}
		if err := db.CreateApplication(ctx, a); err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	key := func(org, api, name string, app string, expires *time.Time) string {
		t.Helper()
		k := &ConsumerKey{OrganizationID: org, APIID: api, Name: name, Hash: strings.Repeat(name[:1], 64),
			MaskedAPIKey: "****" + name, CreatedBy: "sub", ExpiresAt: expires}
		if app != "" {
			k.ApplicationID = &app
		}
		if err := db.CreateConsumerKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		return k.ID
	}
	past := time.Now().Add(-time.Hour)
	here, both, away, gone, lapsed := app(o.ID, "here"), app(o.ID, "both"), app(o.ID, "away"), app(o.ID, "gone"), app(o.ID, "lapsed")
	hereKey := key(o.ID, deployed, "a-here", here, nil)
	bothKeys := []string{key(o.ID, deployed, "b-both", both, nil), key(o.ID, notHere, "c-both", both, nil)}
	key(o.ID, notHere, "d-away", away, nil)
	key(o.ID, undeployed, "e-gone", gone, nil)
	key(o.ID, deployed, "f-lapsed", lapsed, &past)
	key(o.ID, deployed, "g-no-app", "", nil)
	// Another organization's application, keys and deployment.
	ogw, oapi := mustGateway(t, db, other.ID, "gw"), mustAPI(t, db, other.ID)
	deploy(other.ID, oapi, ogw)
	key(other.ID, oapi, "h-other", app(other.ID, "other"), nil)

	evs, err := ConsumerKeySource{db}.AfterKeysPulled(ctx, o.ID, gw.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, ev := range evs {
		var p struct {
			ApplicationUUID string
			Mappings        []struct{ APIKeyUUID string }
		}
		if err := json.Unmarshal(ev.Payload, &p); err != nil || ev.Type != EventApplicationUpdated {
			t.Fatalf("event %s %s: %v", ev.Type, ev.Payload, err)
		}
		for _, m := range p.Mappings {
			got[p.ApplicationUUID] = append(got[p.ApplicationUUID], m.APIKeyUUID)
		}
	}
	want := map[string][]string{here: {hereKey}, both: bothKeys}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("application.updated after the pull maps %v, want %v (here %s, both %s)", got, want, here, both)
	}

	if pgtest.Postgres() {
		return // its planner reads the statistics; the plan is checked on SQLite
	}
	rows, err := db.read.QueryContext(ctx, `EXPLAIN QUERY PLAN `+appsOfGatewayQuery, gw.ID, o.ID, formatTime(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	all := strings.Join(plan, "\n")
	if !strings.Contains(all, "SEARCH d USING INDEX deployments_gateway") || !strings.Contains(all, "SEARCH k USING INDEX api_keys_api") ||
		strings.Contains(all, "SCAN") || strings.Contains(all, "api_keys_org") {
		t.Fatalf("the read does not start from the gateway's deployments:\n%s", strings.Join(plan, "\n"))
	}
}
