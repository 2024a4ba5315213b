package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

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

// migrationLockKey is the PostgreSQL advisory lock that serializes the
// migrations of replicas starting at once ("platform-api migrate").
const migrationLockKey = 0x706c6174666f726d

// migrate applies, in order and each in its own transaction, the embedded
// migrations that the database has not seen. On PostgreSQL each transaction
// first takes an advisory lock and reads the version under it, so replicas
// starting at the same moment apply each step once. A database newer than
// this binary is refused.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	for {
		done := false
		err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
			if db.dialect == dialectPostgres {
				if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockKey)); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version INTEGER PRIMARY KEY,
				name TEXT NOT NULL,
				applied_at TEXT NOT NULL)`); err != nil {
				return err
			}
			var current int
			if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
				return err
			}
			if current > len(ms) {
				return fmt.Errorf("database schema version %d is newer than this binary supports (%d): run a newer platform-api, or restore a backup", current, len(ms))
			}
			if current == len(ms) {
				done = true
				return nil
			}
			m := ms[current]
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if hook := migrationHooks[m.version]; hook != nil {
				if err := hook(ctx, tx); err != nil {
					return fmt.Errorf("migration %s: %w", m.name, err)
				}
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				m.version, m.name, formatTime(now))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if done {
			return nil
		}
	}
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
