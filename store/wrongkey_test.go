package store

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestWrongKeyIsRefused: a store opened with an encryption key other than
// the one the database seals with (a replica given another key file)
// refuses to start and says why, and writes nothing: the right key still
// opens every secret afterwards. It is refused before any secret is
// stored too, else it would seal what the other replicas cannot open.
func TestWrongKeyIsRefused(t *testing.T) {
	for _, secrets := range []bool{false, true} {
		t.Run(map[bool]string{false: "NoSecretYet", true: "WithSecrets"}[secrets], func(t *testing.T) {
			wrongKeyIsRefused(t, secrets)
		})
	}
}

func wrongKeyIsRefused(t *testing.T, secrets bool) {
	dsn := freshDSN(t)
	ctx := context.Background()
	db, err := Open(ctx, testConfig(dsn))
	if err != nil {
		t.Fatal(err)
	}
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	var a *API
	if secrets {
		if a, err = db.CreateAPI(ctx, apiWithSecrets(o.ID, ps[0].ID)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	other, _ := NewSealer(bytes.Repeat([]byte{8}, 32))
	if wrong, err := Open(ctx, Config{DSN: dsn, Sealer: other}); err == nil {
		wrong.Close()
		t.Fatal("a store opened with a key that cannot open its secrets")
	} else if !strings.Contains(err.Error(), "PLATFORM_ENCRYPTION_KEY_FILE") || !strings.Contains(err.Error(), testSealer.KeyID()) {
		t.Fatalf("refused, but not saying why: %v", err)
	}

	db, err = Open(ctx, testConfig(dsn))
	if err != nil {
		t.Fatalf("the right key after a refused one: %v", err)
	}
	defer db.Close()
	if !secrets {
		return
	}
	got, err := db.API(ctx, o.ID, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.OpenSecrets(got); err != nil || got.MTLS.ClientKey != "API-LEVEL-KEY" {
		t.Fatalf("secrets after a refused start: %q, %v", got.MTLS.ClientKey, err)
	}
}
