package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// openSQLite opens the SQLite database at path: one writer connection,
// whose transactions start with BEGIN IMMEDIATE, so that writers queue in
// Go instead of failing with "database is locked", and a pool of read-only
// connections, which WAL lets run beside the writer. The database files are
// readable by their owner only.
func openSQLite(path string, maxConns int) (write, read *sql.DB, err error) {
	if err := ownerOnly(path); err != nil {
		return nil, nil, err
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
	if write, err = sql.Open("sqlite", base+"?"+w.Encode()); err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
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
	if read, err = sql.Open("sqlite", base+"?"+r.Encode()); err != nil {
		write.Close()
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	if maxConns <= 0 {
		maxConns = max(4, 2*runtime.GOMAXPROCS(0))
	}
	read.SetMaxOpenConns(maxConns)
	read.SetMaxIdleConns(maxConns)
	return write, read, nil
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
	switch pgCode(err) {
	case "23505":
		return uniqueViolation
	case "23503":
		return foreignKeyViolation
	case "23514":
		return checkViolation
	}
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
