package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Config says which database to open and how the store behaves.
type Config struct {
	// Path is the SQLite database file.
	Path string
	// Sealer seals the secrets of API definitions at rest. Required.
	Sealer *Sealer
	// KeepRevisions is how many revisions of each API are kept besides
	// the ones deployed somewhere; older ones are pruned in the
	// background. 0 means DefaultKeepRevisions.
	KeepRevisions int
	// Log receives what the store does by itself (resealing, pruning
	// failures). Nil discards it.
	Log *slog.Logger
	// AckTimeout is how long a deployment sent to a second-generation
	// gateway may wait for its acknowledgement before it is FAILED with
	// DEPLOYMENT_TIMEOUT. 0 means DefaultAckTimeout.
	AckTimeout time.Duration
	// TombstoneRetention is how long undeployments and deletions are
	// remembered for gateways that have not acknowledged them. 0 means
	// DefaultTombstoneRetention.
	TombstoneRetention time.Duration
}

// Defaults of Config.
const (
	DefaultKeepRevisions      = 20
	DefaultAckTimeout         = 60 * time.Second
	DefaultTombstoneRetention = 30 * 24 * time.Hour
)

// Open opens (creating if needed) the SQLite database at cfg.Path and brings
// its schema up to date. A database whose schema is newer than this binary
// knows is refused, so that an older binary never writes to a newer schema.
// The database files are readable by their owner only.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("open database: no encryption key for secrets at rest")
	}
	if cfg.KeepRevisions <= 0 {
		cfg.KeepRevisions = DefaultKeepRevisions
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.TombstoneRetention <= 0 {
		cfg.TombstoneRetention = DefaultTombstoneRetention
	}
	path := cfg.Path
	if err := ownerOnly(path); err != nil {
		return nil, err
	}
	base := "file:" + (&url.URL{Path: path}).EscapedPath()
	// Per-connection settings live in the DSN so that every pooled connection
	// gets them, not only the first one.
	common := url.Values{}
	common.Add("_pragma", "foreign_keys(1)")
	common.Add("_pragma", "busy_timeout(10000)")
	common.Add("_pragma", "journal_mode(WAL)")
	common.Add("_pragma", "synchronous(NORMAL)")

	w := url.Values{}
	for k, v := range common {
		w[k] = append([]string(nil), v...)
	}
	w.Set("_txlock", "immediate")
	write, err := sql.Open("sqlite", base+"?"+w.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One writer connection: SQLite allows one writer at a time anyway, and
	// queueing in database/sql is cheaper and fairer than busy-waiting.
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)

	r := url.Values{}
	for k, v := range common {
		r[k] = append([]string(nil), v...)
	}
	r.Add("_pragma", "query_only(1)")
	// 8 MiB of page cache per read connection (SQLite's default is 2 MiB):
	// gateway downloads after a fleet-wide deployment read tokens and
	// deployments of every gateway at once.
	r.Add("_pragma", "cache_size(-8192)")
	read, err := sql.Open("sqlite", base+"?"+r.Encode())
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	n := max(4, 2*runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)

	db := &DB{write: write, read: read, wstmts: newStmtCache(write), rstmts: newStmtCache(read), Now: time.Now,
		writeSlot: make(chan struct{}, 1), sealer: cfg.Sealer, keep: cfg.KeepRevisions, log: cfg.Log, prune: map[string]bool{},
		ackTimeout: cfg.AckTimeout, retention: cfg.TombstoneRetention,
		fetched: map[fetchKey]time.Time{}, seen: map[string]time.Time{}, stopFlush: make(chan struct{}), flushDone: make(chan struct{})}
	go db.flushLoop(db.stopFlush, db.flushDone)
	if err := db.checkWAL(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.atStart(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// ownerOnly creates the database file with mode 0600 if it does not exist
// (SQLite gives its -wal and -shm files the same mode), and takes group and
// other permissions away from the files that exist.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			err = os.Chmod(p, fi.Mode().Perm()&0o700)
		}
		if err != nil {
			return fmt.Errorf("open database: %w", err)
		}
	}
	return nil
}

func (db *DB) checkWAL(ctx context.Context) error {
	var mode string
	if err := db.write.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("open database: journal_mode is %q, want wal (is the file on a file system that supports shared memory?)", mode)
	}
	return nil
}

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and '_'", e.Name())
		}
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// migrate applies, in order and each in its own transaction, the embedded
// migrations that the database has not seen.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := db.write.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if current > len(ms) {
		return fmt.Errorf("database schema version %d is newer than this binary supports (%d): run a newer platform-api, or restore a backup", current, len(ms))
	}
	for _, m := range ms[current:] {
		err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			if hook := migrationHooks[m.version]; hook != nil {
				if err := hook(ctx, tx); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				m.version, m.name, formatTime(now))
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// constraint tells which kind of constraint an error from the driver broke,
// from the driver's extended result code (never from the message text).
type constraint int

const (
	noConstraint constraint = iota
	uniqueViolation
	foreignKeyViolation
	checkViolation
)

func constraintOf(err error) constraint {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return noConstraint
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return uniqueViolation
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return foreignKeyViolation
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return checkViolation
	}
	return noConstraint
}

// migrationHooks finish a migration where SQL alone cannot (portably): they
// run in the migration's transaction, after its SQL.
var migrationHooks = map[int]func(ctx context.Context, tx *Tx) error{
	5: fillDeploymentIDsAndHandles,
}

// fillDeploymentIDsAndHandles gives each existing deployment a deployment
// id and each existing API a handle, then makes handles unique per
// organization.
func fillDeploymentIDsAndHandles(ctx context.Context, tx *Tx) error {
	type key struct{ api, gateway string }
	var deps []key
	rows, err := tx.QueryContext(ctx, `SELECT api_id, gateway_id FROM deployments WHERE deployment_id = ''`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.api, &k.gateway); err != nil {
			rows.Close()
			return err
		}
		deps = append(deps, k)
	}
	rows.Close()
	for _, k := range deps {
		if _, err := tx.ExecContext(ctx, `UPDATE deployments SET deployment_id = $1 WHERE api_id = $2 AND gateway_id = $3`,
			newID(), k.api, k.gateway); err != nil {
			return err
		}
	}
	type api struct{ id, org, context, version string }
	var apis []api
	rows, err = tx.QueryContext(ctx, `SELECT id, organization_id, context, version FROM apis WHERE handle = '' ORDER BY created_at, id`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var a api
		if err := rows.Scan(&a.id, &a.org, &a.context, &a.version); err != nil {
			rows.Close()
			return err
		}
		apis = append(apis, a)
	}
	rows.Close()
	for _, a := range apis {
		h, err := freeHandle(ctx, tx, a.org, a.id, a.context, a.version)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE apis SET handle = $1 WHERE id = $2`, h, a.id); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `CREATE UNIQUE INDEX apis_org_handle ON apis (organization_id, handle)`)
	return err
}
