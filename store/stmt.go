package store

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
)

// stmtCache keeps prepared statements by query text, so that a hot query is
// parsed once per connection rather than on every call (SQL parsing was the
// largest single cost of an API create before it). Queries whose text varies
// without bound are not cached once the cache is full.
//
// Preparing on the pool needs a free connection. Inside a transaction the
// write pool has none (it has one connection, held by the transaction), so
// a query first seen in a transaction runs unprepared and is only queued;
// prepareQueued prepares it once the transaction has ended.
type stmtCache struct {
	pool    *sql.DB
	enabled bool // PostgreSQL's driver (pgx) caches prepared statements itself
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	queued  map[string]bool
	// count counts the statements run through the cache and the
	// transactions that use it (DB.Statements).
	count *atomic.Int64
}

const maxCachedStmts = 256

func newStmtCache(pool *sql.DB, enabled bool, count *atomic.Int64) *stmtCache {
	return &stmtCache{pool: pool, enabled: enabled, m: map[string]*sql.Stmt{}, queued: map[string]bool{}, count: count}
}

// lookup returns the prepared statement for q, or nil after queueing q to be
// prepared by prepareQueued.
func (c *stmtCache) lookup(q string) *sql.Stmt {
	if !c.enabled {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.m[q]; ok {
		return s
	}
	if len(c.m)+len(c.queued) < maxCachedStmts {
		c.queued[q] = true
	}
	return nil
}

// prepareQueued prepares the queued queries. Call it with no transaction of
// this pool open in the calling goroutine.
//
// c.mu is not held while preparing: preparing waits for a connection, and
// the goroutine holding that connection may be waiting for c.mu in lookup.
func (c *stmtCache) prepareQueued(ctx context.Context) {
	c.mu.Lock()
	var qs []string
	for q := range c.queued {
		qs = append(qs, q)
		delete(c.queued, q)
	}
	c.mu.Unlock()
	for _, q := range qs {
		s, err := c.pool.PrepareContext(ctx, q)
		if err != nil {
			continue // the query keeps running unprepared, and reports its error itself
		}
		c.mu.Lock()
		if _, dup := c.m[q]; dup || c.m == nil {
			s.Close()
		} else {
			c.m[q] = s
		}
		c.mu.Unlock()
	}
}

// get returns the prepared statement for q outside a transaction, preparing
// it if needed; nil means run q unprepared.
func (c *stmtCache) get(ctx context.Context, q string) *sql.Stmt {
	if s := c.lookup(q); s != nil {
		return s
	}
	c.prepareQueued(ctx)
	return c.lookup(q)
}

// pending reports whether queries wait to be prepared.
func (c *stmtCache) pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queued) > 0
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.m {
		s.Close()
	}
	c.m = nil
}

// QueryRowContext runs a one-row query on the pool with a cached statement.
func (c *stmtCache) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	c.count.Add(1)
	if s := c.get(ctx, q); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return c.pool.QueryRowContext(ctx, q, args...)
}

// ExecContext runs a statement on the pool with a cached statement.
func (c *stmtCache) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	c.count.Add(1)
	if s := c.get(ctx, q); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return c.pool.ExecContext(ctx, q, args...)
}

// Tx is a transaction whose queries use the cached statements of its pool.
type Tx struct {
	*sql.Tx
	stmts   *stmtCache
	sealer  *Sealer
	dialect dialect
	origin  string
	changes []*Change // published after commit
}

// lockRow locks a row of table by id until the transaction ends, so that a
// read-modify-write of it is not interleaved with another's. On SQLite the
// one writer already serializes write transactions.
func (t *Tx) lockRow(ctx context.Context, table, id string) error {
	if t.dialect != dialectPostgres {
		return nil
	}
	_, err := t.ExecContext(ctx, `SELECT 1 FROM `+table+` WHERE id = $1 FOR UPDATE`, id)
	return err
}

// lockShared takes shared locks on rows of table (PostgreSQL; SQLite has one
// writer), in the order of ids (sorted by the caller): they exclude lockRow's,
// not each other.
func (t *Tx) lockShared(ctx context.Context, table string, ids []string) error {
	if t.dialect != dialectPostgres {
		return nil
	}
	for start := 0; start < len(ids); start += inChunk {
		chunk := ids[start:min(start+inChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		if _, err := t.ExecContext(ctx, `SELECT 1 FROM `+table+` WHERE id IN (`+placeholders(1, len(chunk))+`)
			ORDER BY id FOR SHARE`, args...); err != nil {
			return err
		}
	}
	return nil
}

// forUpdate is the clause that locks the rows a query reads (PostgreSQL).
func (t *Tx) forUpdate() string {
	if t.dialect != dialectPostgres {
		return ""
	}
	return " FOR UPDATE"
}

// record notes a change to publish once the transaction has committed, and
// returns it with its ID set.
func (t *Tx) record(c *Change) *Change {
	c.ID, c.Local, c.Origin = newID(), true, t.origin
	t.changes = append(t.changes, c)
	return c
}

// ExecContext runs a statement in the transaction.
func (t *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	t.stmts.count.Add(1)
	if s := t.stmts.lookup(q); s != nil {
		return t.Tx.StmtContext(ctx, s).ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, q, args...)
}

// QueryContext runs a query in the transaction.
func (t *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	t.stmts.count.Add(1)
	if s := t.stmts.lookup(q); s != nil {
		return t.Tx.StmtContext(ctx, s).QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, q, args...)
}

// QueryRowContext runs a one-row query in the transaction.
func (t *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	t.stmts.count.Add(1)
	if s := t.stmts.lookup(q); s != nil {
		return t.Tx.StmtContext(ctx, s).QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, q, args...)
}

// Statements is how many SQL statements the store has run, in transactions
// and on its pools (transactions' begin and commit not counted). Tests
// count a write's statements with it; a set-based write runs as many for
// one row as for thousands.
func (db *DB) Statements() int64 { return db.statements.Load() }
