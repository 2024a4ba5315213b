// Package pgtest runs tests against PostgreSQL as well as SQLite.
//
// When PLATFORM_TEST_POSTGRES holds a PostgreSQL URL, Main runs a package's
// tests twice: on SQLite in the test process, then, in a child process of
// the same test binary, on PostgreSQL. There each test gets a schema of its
// own (Schema), dropped when it ends, so tests run in parallel and leave
// nothing behind. When the URL is set, PostgreSQL must answer: a test that
// cannot reach it fails; it is never skipped.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Environment of a test run.
const (
	// URLEnv holds the URL of the PostgreSQL database tests may use.
	URLEnv = "PLATFORM_TEST_POSTGRES"
	// StoreEnv is "postgres" in the run of the tests on PostgreSQL.
	StoreEnv = "PLATFORM_TEST_STORE"
)

// Postgres reports whether this is the run of the tests on PostgreSQL.
//
// It reads URLEnv too: the test cache keys a package's result on the
// variables its tests read while they run (not those TestMain reads before
// or after), and every store-backed test calls Postgres (storetest.DSN).
// Without that read, a result cached from a SQLite-only run would be
// replayed for a run that asked for PostgreSQL too, which then never ran.
func Postgres() bool {
	_ = os.Getenv(URLEnv)
	return os.Getenv(StoreEnv) == "postgres"
}

// Main runs the package's tests, then, when URLEnv is set, runs them again
// on PostgreSQL in a child process, and returns the exit code for os.Exit.
// Its output says which stores ran (go test -v shows it).
func Main(m *testing.M) int {
	code := m.Run()
	onPostgres, url := Postgres(), os.Getenv(URLEnv)
	if onPostgres {
		fmt.Println("pgtest: ran on PostgreSQL")
		return code
	}
	if url == "" {
		fmt.Printf("pgtest: ran on SQLite only (set %s to run on PostgreSQL too)\n", URLEnv)
		return code
	}
	sweep()
	fmt.Println("--- the same tests, on PostgreSQL")
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), StoreEnv+"=postgres")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil && code == 0 {
		code = 1
	}
	return code
}

// URL returns the database URL of URLEnv, failing the test when it is not
// set.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(URLEnv)
	if u == "" {
		t.Fatalf("%s is not set: it must hold the URL of the PostgreSQL database to test against", URLEnv)
	}
	return u
}

// Schema creates a schema of its own for the test, dropped when the test
// ends, and returns a URL whose connections use it.
func Schema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("%s: %v", URLEnv, err)
	}
	defer admin.Close()
	b := make([]byte, 4)
	rand.Read(b)
	// The creation time is in the name, so that sweep can drop what a
	// killed run left.
	schema := fmt.Sprintf("t_%x_%s", time.Now().Unix(), hex.EncodeToString(b))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("PostgreSQL (%s) does not answer or refuses to create a schema: %v", URLEnv, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", URLEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Exec runs statements on the database of URLEnv (not in a test's schema):
// for faults such as terminating a test's connections.
func Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	admin, err := sql.Open("pgx", URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// sweep drops the test schemas older than an hour: left by a run that was
// killed before its cleanups ran.
func sweep() {
	admin, err := sql.Open("pgx", os.Getenv(URLEnv))
	if err != nil {
		return
	}
	defer admin.Close()
	rows, err := admin.Query(`SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 't\_%'`)
	if err != nil {
		return
	}
	var old []string
	for rows.Next() {
		var name string
		var created int64
		if rows.Scan(&name) == nil {
			if _, err := fmt.Sscanf(name, "t_%x_", &created); err != nil || time.Since(time.Unix(created, 0)) > time.Hour {
				old = append(old, name)
			}
		}
	}
	rows.Close()
	for _, name := range old {
		admin.Exec("DROP SCHEMA " + name + " CASCADE")
	}
}
