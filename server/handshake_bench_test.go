package server

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"platform-api/hub"
	"platform-api/store"
)

// seedGateways adds n gateways with one active token each straight into the
// database file, in one transaction, so that 100,000 take seconds. Their
// tokens are never presented; they only make the tables as large as a big
// fleet's.
func seedGateways(b *testing.B, dsn, orgID string, n int) {
	b.Helper()
	driver, source := "sqlite", "file:"+dsn+"?_pragma=busy_timeout(10000)"
	if store.IsPostgres(dsn) {
		driver, source = "pgx", dsn
	}
	db, err := sql.Open(driver, source)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	gs, _ := tx.Prepare(`INSERT INTO gateways (id, organization_id, name, display_name, vhost, created_at, updated_at) VALUES ($1, $2, $3, $3, 'gw', $4, $4)`)
	ts, _ := tx.Prepare(`INSERT INTO gateway_tokens (id, gateway_id, salt, hash, active_slot, created_at) VALUES ($1, $2, $3, $4, 1, $5)`)
	salt, hash := make([]byte, 16), make([]byte, 32)
	for i := range n {
		rand.Read(hash)
		gid := uuid.NewString()
		if _, err := gs.Exec(gid, orgID, fmt.Sprintf("seed-%d", i), now); err != nil {
			b.Fatal(err)
		}
		if _, err := ts.Exec(uuid.NewString(), gid, salt, hash, now); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkHandshake measures one gateway connection — TLS handshake,
// api-key verification, upgrade and connection.ack — with 10 and with
// 100,000 registered gateways. Verification reads one token by primary key,
// so the two should not differ.
func BenchmarkHandshake(b *testing.B) {
	for _, n := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			e := newEnvWith(b, func(o *Options) {
				o.Hub = hub.Config{MaxPerGateway: 1 << 20}
				o.WSRateLimitPerMinute = 1 << 30
			})
			org, tok := e.newOrg()
			seedGateways(b, e.dsn, org, n)
			g := e.newGateway(tok, "bench-gw")
			var issued struct{ Token string }
			e.must(201, "POST", "/api/v1/gateways/"+g.ID+"/tokens", tok, nil, &issued)
			b.ResetTimer()
			for b.Loop() {
				c, _ := mustDial(b, e.srv.URL, issued.Token)
				c.conn.Close()
			}
			b.StopTimer()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e.api.Hub().Shutdown(ctx)
		})
	}
}
