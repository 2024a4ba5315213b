package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// Probe checks, without writing anything, that the database dsn names can
// be opened: a PostgreSQL server is connected to and must accept the URL's
// database and role; a SQLite file must be in a directory that exists (or
// will: dataDir, which the server makes) and, if it exists, be a SQLite
// database. The server probes before it makes its data directory, TLS pair
// and keys, so that a start that cannot succeed leaves nothing behind.
func Probe(ctx context.Context, dsn, dataDir string) error {
	if err := CheckDSN(dsn); err != nil {
		return err
	}
	if IsPostgres(dsn) {
		conf, err := pgx.ParseConfig(dsn)
		if err != nil {
			return fmt.Errorf("PostgreSQL URL %s: %s", redactURL(dsn), scrub(err.Error(), dsn))
		}
		if conf.ConnectTimeout == 0 {
			conf.ConnectTimeout = defaultConnectTimeout
		}
		pctx, cancel := context.WithTimeout(ctx, conf.ConnectTimeout+time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(pctx, conf)
		if err != nil {
			return connectError(conf, dsn, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if err := conn.Ping(pctx); err != nil {
			return connectError(conf, dsn, err)
		}
		return nil
	}
	dir := filepath.Dir(dsn)
	if filepath.Clean(dir) != filepath.Clean(dataDir) {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("SQLite database %s: the directory %s does not exist; make it, or leave PLATFORM_DB unset to keep the database in the data directory", dsn, dir)
		}
	}
	f, err := os.Open(dsn)
	if errors.Is(err, os.ErrNotExist) {
		return nil // made at start
	}
	if err != nil {
		return fmt.Errorf("SQLite database %s: %w", dsn, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return fmt.Errorf("SQLite database %s is a directory; name a file", dsn)
	}
	head := make([]byte, 16)
	n, err := io.ReadFull(f, head)
	if n == 0 && (err == io.EOF || err == nil) {
		return nil // empty: SQLite makes a database in it
	}
	if !bytes.Equal(head[:n], []byte("SQLite format 3\x00")[:n]) || n < 16 {
		return fmt.Errorf("SQLite database %s is not a SQLite database file; name another file, or move it away", dsn)
	}
	return nil
}
