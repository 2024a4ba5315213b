// Package storetest opens the store under test: a SQLite file in the test's
// temporary directory, or, in the run of the tests on PostgreSQL (pgtest),
// a schema of the test's own.
package storetest

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"platform-api/store"
	"platform-api/store/pgtest"
)

// Sealer is a sealer with a fixed test key.
var Sealer, _ = store.NewSealer(bytes.Repeat([]byte{7}, 32))

// DSN returns a fresh database for the test: a SQLite path, or a
// PostgreSQL URL to a schema of its own.
func DSN(t testing.TB) string {
	t.Helper()
	if pgtest.Postgres() {
		return pgtest.Schema(t)
	}
	return filepath.Join(t.TempDir(), "platform.db")
}

// Open opens a migrated store on a fresh database, closed when the test
// ends; mod may change the configuration first. It returns the DSN too.
func Open(t testing.TB, mod func(*store.Config)) (*store.DB, string) {
	t.Helper()
	cfg := store.Config{DSN: DSN(t), Sealer: Sealer}
	if mod != nil {
		mod(&cfg)
	}
	db, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, cfg.DSN
}

// Raw opens a database/sql handle on the database of dsn, for tests that
// read rows the API does not show.
func Raw(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	driver, source := "sqlite", "file:"+dsn+"?mode=ro"
	if store.IsPostgres(dsn) {
		driver, source = "pgx", dsn
	}
	db, err := sql.Open(driver, source)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
