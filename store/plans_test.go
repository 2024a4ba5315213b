package store

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestConsumerValuesResealedOnRotation: secret values and subscription
// tokens are sealed at rest, resealed under a new first key at start, and
// still open once the old key is gone; a secret's hash does not move.
func TestConsumerValuesResealedOnRotation(t *testing.T) {
	path := freshDSN(t)
	ctx := context.Background()
	db, err := Open(ctx, testConfig(path))
	if err != nil {
		t.Fatal(err)
	}
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	a := apiWithSecrets(o.ID, ps[0].ID)
	a.Description = `{{ secret "db-pass" }}`
	if a, err = db.CreateAPI(ctx, a); err != nil {
		t.Fatal(err)
	}
	sec := &Secret{OrganizationID: o.ID, Name: "db-pass"}
	if err := db.CreateSecret(ctx, sec, "PLAIN-SECRET-VALUE"); err != nil {
		t.Fatal(err)
	}
	g := mustGateway(t, db, o.ID, "gw")
	if _, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: g.ID}}, func(*Revision) error { return nil }); err != nil {
		t.Fatal(err)
	}
	sub := &Subscription{OrganizationID: o.ID, APIID: a.ID, Status: ConsumerActive}
	if err := db.CreateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	stored := func(db *DB) string {
		t.Helper()
		var v, tok string
		if err := db.read.QueryRow(`SELECT value FROM secrets`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if err := db.read.QueryRow(`SELECT token FROM subscriptions`).Scan(&tok); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(v, "PLAIN-SECRET-VALUE") || strings.Contains(tok, sub.Token) {
			t.Fatal("stored in clear")
		}
		return v + " " + tok
	}
	if s := stored(db); strings.Count(s, sealedPrefix+testSealer.KeyID()+":") != 2 {
		t.Fatalf("stored %q", s)
	}
	db.Close()

	newKey := bytes.Repeat([]byte{9}, 32)
	rotated, _ := NewSealer(newKey, bytes.Repeat([]byte{7}, 32))
	if db, err = Open(ctx, Config{DSN: path, Sealer: rotated}); err != nil {
		t.Fatal(err)
	}
	if s := stored(db); strings.Count(s, sealedPrefix+rotated.KeyID()+":") != 2 {
		t.Fatalf("not resealed at start: %q", s)
	}
	db.Close()

	only, _ := NewSealer(newKey)
	if db, err = Open(ctx, Config{DSN: path, Sealer: only}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	secs, err := db.GatewaySecrets(ctx, g.ID, o.ID, true, time.Time{})
	if err != nil || len(secs) != 1 || secs[0].Value != "PLAIN-SECRET-VALUE" || secs[0].Hash != sec.Hash {
		t.Fatalf("secrets after rotation: %+v, %v", secs, err)
	}
	subs, err := db.GatewaySubscriptions(ctx, g.ID, o.ID, a.ID)
	if err != nil || len(subs) != 1 || subs[0].Token != sub.Token {
		t.Fatalf("subscriptions after rotation: %+v, %v", subs, err)
	}
}
