package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"platform-api/store/pgtest"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustGateway(t testing.TB, db *DB, orgID, name string) *Gateway {
	t.Helper()
	g := &Gateway{OrganizationID: orgID, Name: name, DisplayName: name, Vhost: "gw.example.com", FunctionalityType: "regular"}
	if err := db.CreateGateway(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestParseToken(t *testing.T) {
	good := formatToken("0f8e5a4c-1b2d-4e6f-8a9b-0c1d2e3f4a5b", make([]byte, 32))
	if len(good) != tokenLen {
		t.Fatalf("token length %d, want %d", len(good), tokenLen)
	}
	id, secret, ok := ParseToken(good)
	if !ok || id != "0f8e5a4c-1b2d-4e6f-8a9b-0c1d2e3f4a5b" || len(secret) != 32 {
		t.Fatalf("ParseToken(%q) = %q, %d, %v", good, id, len(secret), ok)
	}
	for _, bad := range []string{
		"", "gwt_", good[:len(good)-1], good + "A", "xyz" + good[3:],
		strings.Replace(good, "_", "-", 1),
		"gwt_" + strings.ToUpper(good[4:36]) + good[36:], // upper-case hex is not canonical
		"gwt_" + "zz" + good[6:],
		good[:len(good)-1] + "!",
	} {
		if _, _, ok := ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func TestTokenLifecycle(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	o := mustOrg(t, db)
	g := mustGateway(t, db, o.ID, "edge")

	t1, err := db.IssueToken(ctx, o.ID, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := db.IssueToken(ctx, o.ID, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.IssueToken(ctx, o.ID, g.ID); !errors.Is(err, ErrConflict) {
		t.Fatalf("third token: %v, want ErrConflict", err)
	}
	// Rotation: both verify while both are active.
	for _, tok := range []*IssuedToken{t1, t2} {
		id, err := db.VerifyToken(ctx, tok.Token)
		if err != nil || id.GatewayID != g.ID || id.OrganizationID != o.ID || id.TokenID != tok.ID {
			t.Fatalf("VerifyToken = %+v, %v", id, err)
		}
	}
	// Revoke the old one: only the new one verifies, and a slot is free again.
	if _, err := db.RevokeToken(ctx, o.ID, g.ID, t1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeToken(ctx, o.ID, g.ID, t1.ID); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if _, err := db.VerifyToken(ctx, t1.Token); !errors.Is(err, ErrBadToken) {
		t.Fatalf("revoked token verifies: %v", err)
	}
	if _, err := db.VerifyToken(ctx, t2.Token); err != nil {
		t.Fatal(err)
	}
	t3, err := db.IssueToken(ctx, o.ID, g.ID)
	if err != nil {
		t.Fatalf("token after revocation: %v", err)
	}
	list, total, err := db.Tokens(ctx, o.ID, g.ID, Page{Limit: 10})
	if err != nil || total != 3 {
		t.Fatalf("Tokens = %d, %v", total, err)
	}
	status := map[string]*TokenInfo{}
	for _, ti := range list {
		status[ti.ID] = ti
	}
	if status[t1.ID].Status != "revoked" || status[t1.ID].RevokedAt == nil || status[t2.ID].Status != "active" ||
		status[t2.ID].LastUsedAt == nil || status[t3.ID].LastUsedAt != nil {
		t.Fatalf("token list: %+v %+v %+v", status[t1.ID], status[t2.ID], status[t3.ID])
	}
	// A tampered secret, and an unknown ID, do not verify.
	tampered := t3.Token[:len(t3.Token)-2] + "AA"
	if tampered == t3.Token {
		tampered = t3.Token[:len(t3.Token)-2] + "BA"
	}
	if _, err := db.VerifyToken(ctx, tampered); !errors.Is(err, ErrBadToken) {
		t.Fatalf("tampered token: %v", err)
	}
	if _, err := db.VerifyToken(ctx, formatToken(newID(), make([]byte, 32))); !errors.Is(err, ErrBadToken) {
		t.Fatalf("unknown token: %v", err)
	}
	// Another organization cannot touch the gateway's tokens.
	other := mustOrg(t, db)
	if _, err := db.IssueToken(ctx, other.ID, g.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other org issues: %v", err)
	}
	if _, err := db.RevokeToken(ctx, other.ID, g.ID, t2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other org revokes: %v", err)
	}
	if _, _, err := db.Tokens(ctx, other.ID, g.ID, Page{Limit: 10}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other org lists: %v", err)
	}
	// Deleting the gateway kills its tokens.
	if _, err := db.DeleteGateway(ctx, o.ID, g.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.VerifyToken(ctx, t2.Token); !errors.Is(err, ErrBadToken) {
		t.Fatalf("deleted gateway's token verifies: %v", err)
	}
}

func TestLastUsedIsCoalesced(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	o := mustOrg(t, db)
	g := mustGateway(t, db, o.ID, "edge")
	tok, _ := db.IssueToken(ctx, o.ID, g.ID)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return clock }
	lastUsed := func() string {
		var s sql.NullString
		db.read.QueryRow(`SELECT last_used_at FROM gateway_tokens WHERE id = $1`, tok.ID).Scan(&s)
		return s.String
	}
	db.VerifyToken(ctx, tok.Token)
	first := lastUsed()
	clock = clock.Add(30 * time.Second)
	db.VerifyToken(ctx, tok.Token)
	if got := lastUsed(); got != first {
		t.Fatalf("last_used_at rewritten within a minute: %s -> %s", first, got)
	}
	clock = clock.Add(31 * time.Second)
	db.VerifyToken(ctx, tok.Token)
	if got := lastUsed(); got == first {
		t.Fatal("last_used_at not updated after a minute")
	}
}

func TestTwoActiveTokensUnderConcurrency(t *testing.T) {
	db := MustOpen(t)
	o := mustOrg(t, db)
	g := mustGateway(t, db, o.ID, "edge")
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := db.IssueToken(context.Background(), o.ID, g.ID)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	var ok, conflicts int
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrConflict):
			conflicts++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 2 || conflicts != 8 {
		t.Fatalf("%d issued, %d conflicts; want 2 and 8", ok, conflicts)
	}
}

func TestGatewayNameUniquePerOrganization(t *testing.T) {
	db := MustOpen(t)
	a, b := mustOrg(t, db), mustOrg(t, db)
	mustGateway(t, db, a.ID, "edge")
	mustGateway(t, db, b.ID, "edge")
	err := db.CreateGateway(context.Background(), &Gateway{OrganizationID: a.ID, Name: "edge", DisplayName: "x", FunctionalityType: "regular"})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
}

// seedTokens registers n gateways with one active token each, in a single
// transaction so that 100,000 of them take seconds. It returns the token
// string of the last one.
func seedTokens(tb testing.TB, db *DB, n int) string {
	tb.Helper()
	ctx := context.Background()
	o := mustOrg(tb, db)
	secret := make([]byte, 32)
	salt := make([]byte, 16)
	var last string
	// In batches: one transaction of 200,000 rows outlasts txTimeout on
	// PostgreSQL.
	const batch = 5000
	for start := 0; start < n; start += batch {
		if err := seedTokenBatch(ctx, db, o.ID, start, min(n, start+batch), secret, salt, &last); err != nil {
			tb.Fatal(err)
		}
	}
	return last
}

func seedTokenBatch(ctx context.Context, db *DB, orgID string, from, to int, secret, salt []byte, last *string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		gs, err := tx.PrepareContext(ctx, `INSERT INTO gateways (`+gatewayColumns+`) VALUES ($1, $2, $3, $4, '', 'gw', FALSE, 'regular', $5, $5)`)
		if err != nil {
			return err
		}
		ts, err := tx.PrepareContext(ctx, `INSERT INTO gateway_tokens (id, gateway_id, salt, hash, active_slot, created_at) VALUES ($1, $2, $3, $4, 1, $5)`)
		if err != nil {
			return err
		}
		for i := from; i < to; i++ {
			gid, tid := newID(), newID()
			name := fmt.Sprintf("gw-%d", i)
			if _, err := gs.ExecContext(ctx, gid, orgID, name, name, formatTime(now)); err != nil {
				return err
			}
			if _, err := ts.ExecContext(ctx, tid, gid, salt, hashSecret(salt, secret), formatTime(now)); err != nil {
				return err
			}
			*last = formatToken(tid, secret)
		}
		return nil
	})
}

// BenchmarkVerifyToken shows that a verification costs the same with 10 and
// with 100,000 registered gateways: one primary-key read and one hash.
// BenchmarkVerifyToken verifies a token read from the database (first:
// the remembered tokens are forgotten before each), and one verified
// lately (remembered).
func BenchmarkVerifyToken(b *testing.B) {
	for _, n := range []int{10, 100_000} {
		db := MustOpen(b)
		tok := seedTokens(b, db, n)
		ctx := context.Background()
		for _, remembered := range []bool{false, true} {
			name := map[bool]string{false: "first", true: "remembered"}[remembered]
			b.Run(fmt.Sprintf("gateways=%d/%s", n, name), func(b *testing.B) {
				if _, err := db.VerifyToken(ctx, tok); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if !remembered {
						db.tokens.clear()
					}
					if _, err := db.VerifyToken(ctx, tok); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func TestFetchMarkOnlyLandsOnItsRevision(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	o := mustOrg(t, db)
	g := mustGateway(t, db, o.ID, "edge")
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	a, err := db.CreateAPI(ctx, testAPI(o.ID, ps[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	ok := func(*Revision) error { return nil }
	rev1, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: g.ID}}, ok)
	if err != nil {
		t.Fatal(err)
	}
	db.MarkFetched(g.ID, map[string]string{a.ID: rev1.ID}) // a download of rev1 ...
	if _, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: g.ID}}, ok); err != nil {
		t.Fatal(err) // ... noted before rev2 is deployed, and flushed after
	}
	deps, err := db.Deployments(ctx, o.ID, a.ID)
	if err != nil || deps[0].FetchedAt != nil {
		t.Fatalf("rev2 marked fetched by a download of rev1: %+v %v", deps[0], err)
	}
}

// TestReportForADeletedGateway: a gateway report racing the gateway's
// deletion answered 500 (NOT NULL constraint failed: deployments.vhost).
// The token verified before the deletion; the report lands after it.
func TestReportForADeletedGateway(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	org := mustOrg(t, db).ID
	g := mustGateway(t, db, org, "gw")
	if _, err := db.DeleteGateway(ctx, org, g.ID); err != nil {
		t.Fatal(err)
	}
	a := &API{ID: newID(), OrganizationID: org, Name: "x", Context: "/x", Version: "v1", Provider: "admin",
		LifeCycleStatus: "CREATED", Type: "HTTP", Transport: []string{"https"}}
	_, err := db.RecordGatewayDeployment(ctx, g.ID, a, DefaultProjectName)
	if !errors.Is(err, ErrBadToken) {
		t.Fatalf("report of a deleted gateway: %v", err)
	}
}

// TestRevocationReachesOtherReplicas: a token verified (and remembered) by
// one replica is refused by it once another replica revoked it.
func TestRevocationReachesOtherReplicas(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("replicas share a PostgreSQL database")
	}
	ctx := context.Background()
	dsn := freshDSN(t)
	open := func(id string) *DB {
		cfg := testConfig(dsn)
		cfg.ReplicaID = id
		db, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	a, b := open("a"), open("b")
	o := mustOrg(t, a)
	g := mustGateway(t, a, o.ID, "edge")
	tok, err := a.IssueToken(ctx, o.ID, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.VerifyToken(ctx, tok.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeToken(ctx, o.ID, g.ID, tok.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := b.VerifyToken(ctx, tok.Token)
		if errors.Is(err, ErrBadToken) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other replica still verifies a revoked token: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
