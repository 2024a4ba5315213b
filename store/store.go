// Package store keeps platform-api's state in a SQL database.
//
// SQLite (through the pure-Go modernc.org/sqlite driver) is the default. The
// repositories use only portable SQL: numbered placeholders ($1, $2, ...),
// TEXT timestamps in a fixed-width UTC format that sorts as it reads, and
// constraints (UNIQUE, FOREIGN KEY, CHECK) rather than read-then-write checks,
// so that a PostgreSQL driver can be added by supplying another Open and
// another constraint-code table (see sqlite.go) without touching the queries.
//
// Every public method opens its own transaction; lower-case helpers take the
// *sql.Tx. Methods that take an organization ID answer ErrNotFound both for a
// missing row and for a row that belongs to another organization.
package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Sentinel kinds of error. Use errors.Is; the concrete error carries a
// description fit for an API client.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
	// ErrBadToken is returned when a gateway token does not verify: malformed,
	// unknown, revoked, or of a deleted gateway. The reason is never told apart
	// to the caller.
	ErrBadToken = errors.New("bad gateway token")
	// ErrUnavailable is returned when the database does not answer (it is
	// down, unreachable, or did not answer in time). The request may be
	// tried again.
	ErrUnavailable = errors.New("database unavailable")
)

// Error is an error of one of the sentinel kinds with a message that tells
// an API client what went wrong. Cause, when set, is the underlying error,
// for the server's log only.
type Error struct {
	kind  error
	msg   string
	Cause error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.kind }

// LogCause is the underlying error, for the server's log only.
func (e *Error) LogCause() error { return e.Cause }

// HTTPStatus is the status an HTTP answer gives this kind of error (httpx
// reads it): the store knows what its errors mean, not how they are served.
func (e *Error) HTTPStatus() int {
	switch e.kind {
	case ErrNotFound:
		return http.StatusNotFound
	case ErrConflict:
		return http.StatusConflict
	case ErrInvalid:
		return http.StatusBadRequest
	case ErrBadToken:
		return http.StatusUnauthorized
	case ErrUnavailable:
		return http.StatusServiceUnavailable
	}
	return 0
}

func notFound(format string, a ...any) error {
	return &Error{kind: ErrNotFound, msg: fmt.Sprintf(format, a...)}
}

func conflict(format string, a ...any) error {
	return &Error{kind: ErrConflict, msg: fmt.Sprintf(format, a...)}
}

func invalid(format string, a ...any) error {
	return &Error{kind: ErrInvalid, msg: fmt.Sprintf(format, a...)}
}

// DB is the handle on the database. On SQLite it holds two pools: one
// connection for writes and several read-only ones (openSQLite); on
// PostgreSQL both are the same pool.
type DB struct {
	dialect dialect
	write   *sql.DB
	read    *sql.DB
	tokens  tokenCache // gateway tokens verified lately
	// writeSlot (SQLite) holds the one write transaction in progress, from
	// begin until its changes are published: so changes are published in
	// commit order. On PostgreSQL the listener publishes them, in the
	// order of the notifications, which is commit order.
	writeSlot chan struct{}
	listener  *listener
	publish   func(*Change)
	resyncMu  sync.Mutex
	resync    func()
	onReport  func(Report)
	readFault func(ChangeKind) error // guarded by resyncMu; see SetChangeReadFault
	pgConfig  *pgx.ConnConfig        // PostgreSQL: the parsed URL, for the listener
	dsn       string                 // PostgreSQL: the URL, to scrub from errors
	channel   string                 // PostgreSQL: the channel changes are notified on
	// origin names this process in the changes it makes, so that the
	// listener tells its own changes from other replicas'.
	origin string
	// replica and lease: this process among replicas (replica.go).
	replica   string
	lease     time.Duration
	renewedAt time.Time      // guarded by fetchMu
	presence  map[string]int // connection counts to write, by gateway; guarded by fetchMu
	held      map[string]int // connection counts written; guarded by fetchMu
	sealer    *Sealer        // seals the secrets of API definitions
	keep      int            // revisions kept per API besides deployed ones
	// maxGatewayAPIs bounds the APIs one gateway creates by itself.
	maxGatewayAPIs int
	log            *slog.Logger
	// AfterCommit, if set, runs after a write transaction that recorded
	// changes commits, before they are published (SQLite) or while the
	// listener publishes them (PostgreSQL). Tests use it to widen races.
	AfterCommit func()
	wstmts      *stmtCache // prepared statements of the write pool
	rstmts      *stmtCache // prepared statements of the read pool
	// Now is this replica's own clock (Config.Clock). What is written to
	// rows and compared with them goes through clock(), the database's.
	Now        func() time.Time
	clockMu    sync.Mutex
	clockAt    clockSample // the last reading of the database's clock (clock.go)
	statements atomic.Int64
	// deadlocks and serializationFailures count write transactions
	// PostgreSQL aborted for those and that were run again (Retries).
	deadlocks, serializationFailures atomic.Int64

	fetchMu sync.Mutex
	leaseMu sync.Mutex             // renewLease, one at a time
	fetched map[fetchKey]time.Time // downloads not yet written
	seen    map[string]time.Time   // gateway last-seen times not yet written
	prune   map[string]bool        // APIs whose old revisions are to be pruned

	ackTimeout   time.Duration
	retention    time.Duration
	expireAt     time.Time // when the oldest unacknowledged deployment times out; zero: none waits
	tombstonesAt time.Time // when tombstones are next pruned
	consumersAt  time.Time // when old consumer events are next pruned (PostgreSQL)
	keysExpireAt time.Time // when the next API key expires, as known here; zero: none
	keysCheckAt  time.Time // when the next expiry is read again (other replicas' keys)
	stopFlush    chan struct{}
	closeOnce    sync.Once
	flushDone    chan struct{}
	// OnTx, if set, is told how long each transaction took, from asking for
	// a connection to commit or rollback, so that waiting for the single
	// writer shows. kind is "read" or "write". Set it before first use.
	OnTx func(kind string, d time.Duration)
}

// Page selects a window of a list.
type Page struct {
	Offset int
	Limit  int
}

// Change is a committed change that live gateway connections must hear
// about. The store hands each one to the publisher (SetPublisher) after its
// transaction commits, in commit order, so that two changes to one API can
// never reach a gateway in the other order.
type Change struct {
	ID   string // unique, so that a caller can find what its change caused
	Kind ChangeKind
	// Local is true when this process made the change (and so a request
	// of this process may wait for what delivering it did). Origin names
	// the process that made it, to send it a delivery report (SendReport).
	Local  bool
	Origin string
	// Deployments are the rows deployed, undeployed, or removed with a
	// deleted API, as committed.
	Deployments []*Deployment
	// TokenID or GatewayID name a revoked token or a deleted gateway.
	TokenID   string
	GatewayID string
	// APIIDs are the APIs whose statuses changed (ChangeStatus).
	APIIDs []string
	// Consumer are the events of a ChangeConsumer, in order.
	Consumer []*ConsumerEvent
}

// ChangeKind says what a Change did.
type ChangeKind int

// Kinds of change.
const (
	ChangeDeployed ChangeKind = iota + 1
	ChangeUndeployed
	ChangeAPIDeleted
	ChangeTokenRevoked
	ChangeGatewayDeleted
	ChangeManifest // a gateway reported its manifest
	ChangeStatus   // deployment statuses of APIIDs changed (acknowledged, timed out)
	// ChangeConsumer carries events about an API's consumers (keys,
	// applications, ...) for second-generation gateways (consumers.go).
	ChangeConsumer
	// ChangeConsumersPulled: GatewayID's GET /apis/api-keys was answered,
	// so its connections are sent what it cannot pull (consumers.go).
	ChangeConsumersPulled
)

// SetPublisher sets the function that hears every committed change, in
// commit order. Set it before the first write. It must not block: it runs
// while the next write waits.
func (db *DB) SetPublisher(fn func(*Change)) { db.publish = fn }

// SetResync sets the function called when changes may have been missed
// (PostgreSQL: the listening connection was lost and is back): the live
// gateways must be brought to their desired state again. Set it before the
// first write.
func (db *DB) SetResync(fn func()) {
	db.resyncMu.Lock()
	db.resync = fn
	db.resyncMu.Unlock()
}

func (db *DB) resyncNow() {
	db.tokens.clear() // a revocation may have been missed
	db.resyncMu.Lock()
	fn := db.resync
	db.resyncMu.Unlock()
	if fn != nil {
		fn()
	}
}

// Aborts reports how many write transactions PostgreSQL aborted for a
// deadlock, and for a serialization failure, since the store opened (each
// was run again, up to maxTxAttempts). A deadlock costs its victim
// deadlock_timeout (1 s by default): writers that take rows in one order
// have none.
func (db *DB) Aborts() (deadlocks, serializationFailures int64) {
	return db.deadlocks.Load(), db.serializationFailures.Load()
}

// txTimeout bounds one transaction, so that a database that stopped
// answering makes a request fail (503) rather than hang.
const txTimeout = 10 * time.Second

// maxTxAttempts bounds the tries of a transaction that PostgreSQL aborted
// for a serialization failure or a deadlock, or that asked to be retried.
const maxTxAttempts = 5

// errRetry, returned by a transaction's function, runs the transaction
// again (a concurrent writer won a race that a fresh read resolves).
var errRetry = errors.New("retry the transaction")

// writeTx runs fn in a write transaction and commits it when fn returns nil.
// The changes fn recorded with tx.record are published in commit order:
// on SQLite after the commit and before the next write transaction may
// begin; on PostgreSQL they are notified inside the transaction and the
// listener publishes them. A transaction aborted for a serialization
// failure or a deadlock is run again, so fn must start from scratch each
// time. The deferred rollback also runs when fn panics.
func (db *DB) writeTx(ctx context.Context, fn func(tx *Tx, now time.Time) error) error {
	for attempt := 1; ; attempt++ {
		err := db.writeTxOnce(ctx, fn)
		switch pgCode(err) {
		case "40P01":
			db.deadlocks.Add(1)
		case "40001":
			db.serializationFailures.Add(1)
		}
		if attempt < maxTxAttempts && retryable(err) {
			time.Sleep(time.Duration(attempt*attempt) * time.Millisecond * time.Duration(1+mathrand.IntN(4)))
			continue
		}
		if errors.Is(err, errRetry) {
			return fmt.Errorf("gave up after %d tries: %w", attempt, err)
		}
		return db.unavailable(ctx, err)
	}
}

func (db *DB) writeTxOnce(ctx context.Context, fn func(tx *Tx, now time.Time) error) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, txTimeout) // unavailable() tells this deadline from the caller's
	defer cancel()
	if db.writeSlot != nil {
		select {
		case db.writeSlot <- struct{}{}:
		case <-ctx.Done():
			db.observeTx("write", start)
			return ctx.Err()
		}
		defer func() { <-db.writeSlot }()
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		db.observeTx("write", start)
		return fmt.Errorf("begin write: %w", err)
	}
	defer tx.Rollback()
	t := &Tx{Tx: tx, stmts: db.wstmts, sealer: db.sealer, dialect: db.dialect, origin: db.origin}
	// Truncated to what the timestamp columns keep, so a value returned
	// before a read-back equals the one read back.
	err = fn(t, db.clock().UTC().Truncate(time.Microsecond))
	if err == nil && db.dialect == dialectPostgres && len(t.changes) > 0 {
		err = db.notify(ctx, t)
	}
	if err == nil {
		if err = tx.Commit(); err != nil {
			err = fmt.Errorf("commit: %w", err)
		}
	}
	tx.Rollback()
	db.observeTx("write", start)
	if err == nil {
		for _, c := range t.changes {
			db.tokens.forget(c) // at once, not when the change is heard
		}
	}
	if db.dialect == dialectPostgres && len(t.changes) > 0 {
		db.listener.settle(t.changes, err == nil)
	}
	if err == nil && len(t.changes) > 0 && db.AfterCommit != nil {
		db.AfterCommit()
	}
	if err == nil && db.dialect == dialectSQLite && len(t.changes) > 0 {
		if db.publish != nil {
			for _, c := range t.changes {
				db.publish(c)
			}
		}
	}
	if db.wstmts.pending() {
		db.wstmts.prepareQueued(ctx)
	}
	return err
}

// readTx runs fn in a read-only transaction, so that the queries it makes see
// one snapshot (a count and the page it counts agree).
func (db *DB) readTx(ctx context.Context, fn func(tx *Tx) error) error {
	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, txTimeout)
	defer cancel()
	opts := &sql.TxOptions{ReadOnly: true}
	if db.dialect == dialectPostgres {
		// One snapshot for the whole transaction, as SQLite's WAL gives.
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.read.BeginTx(tctx, opts)
	if err != nil {
		db.observeTx("read", start)
		return db.unavailable(ctx, fmt.Errorf("begin read: %w", err))
	}
	defer tx.Rollback()
	err = fn(&Tx{Tx: tx, stmts: db.rstmts, sealer: db.sealer, dialect: db.dialect})
	tx.Rollback()
	db.observeTx("read", start)
	if db.rstmts.pending() {
		db.rstmts.prepareQueued(tctx)
	}
	return db.unavailable(ctx, err)
}

// observeTx reports a transaction's duration to OnTx. Statement preparation
// after the transaction is left out: it is cache warming, not the
// transaction.
func (db *DB) observeTx(kind string, start time.Time) {
	if db.OnTx != nil {
		db.OnTx(kind, time.Since(start))
	}
}

// newID returns a random (version 4) UUID in canonical lower-case form.
func newID() string { return uuid.NewString() }

// timeLayout is fixed-width, so that TEXT comparison orders times correctly.
const timeLayout = "2006-01-02T15:04:05.000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// dbTime scans a TEXT timestamp written by formatTime; NULL gives the zero time.
type dbTime struct{ t *time.Time }

func (d dbTime) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case nil:
		*d.t = time.Time{}
		return nil
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return fmt.Errorf("timestamp: unexpected type %T", src)
	}
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return fmt.Errorf("timestamp %q: %w", s, err)
	}
	*d.t = t
	return nil
}

// dbTimePtr scans a nullable TEXT timestamp into a *time.Time.
type dbTimePtr struct{ t **time.Time }

func (d dbTimePtr) Scan(src any) error {
	if src == nil {
		*d.t = nil
		return nil
	}
	var t time.Time
	if err := (dbTime{&t}).Scan(src); err != nil {
		return err
	}
	*d.t = &t
	return nil
}

// placeholders returns "$start, $start+1, ..." for n arguments.
func placeholders(start, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", start+i)
	}
	return b.String()
}

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(...any) error }

// collect returns a function that scans every row of a query's result with
// scan and closes the rows; use it as collect(scanX)(tx.QueryContext(...)).
func collect[T any](scan func(rowScanner) (*T, error)) func(*sql.Rows, error) ([]*T, error) {
	return func(rows *sql.Rows, err error) ([]*T, error) {
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		list := []*T{}
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, rows.Err()
	}
}

// unmarshalJSON decodes a column written by marshalJSON.
func unmarshalJSON(b []byte, v any) error { return json.Unmarshal(b, v) }

// marshalJSON encodes v as compact JSON without HTML escaping: '<', '>' and
// '&' stay one byte each instead of becoming six-byte \u003c escapes, which
// would let a body of such characters be stored at six times its size (and
// again in every revision).
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// atStart does the work a start owes to data written before: secrets in
// clear or under an older key are sealed under the current key, and
// revisions beyond what is kept are pruned.
func (db *DB) atStart(ctx context.Context) error {
	if err := db.checkSealingKey(ctx); err != nil {
		return err
	}
	n, err := db.resealAll(ctx)
	if err != nil {
		return fmt.Errorf("seal secrets at rest: %w", err)
	}
	if n > 0 {
		db.log.Info("secrets sealed under the current encryption key", "definitions", n, "key", db.sealer.KeyID())
	}
	if n, err := db.resealConsumerValues(ctx); err != nil {
		return fmt.Errorf("seal secret values and subscription tokens at rest: %w", err)
	} else if n > 0 {
		db.log.Info("secret values and subscription tokens sealed under the current encryption key", "values", n, "key", db.sealer.KeyID())
	}
	if err := db.pruneRevisions(ctx, ""); err != nil {
		return fmt.Errorf("prune revisions: %w", err)
	}
	// One process holds every connection: none is live at start, so what
	// waited for an acknowledgement waits for the gateway's return. (With
	// replicas, others may hold connections: the timeout tells offline
	// gateways apart instead, see ExpireAcks.)
	if db.dialect == dialectSQLite {
		if err := db.resetUnacknowledged(ctx); err != nil {
			return err
		}
	}
	db.fetchMu.Lock()
	db.tombstonesAt = db.clock().Add(tombstonesEvery)
	db.fetchMu.Unlock()
	return db.PruneTombstones(ctx, db.clock().Add(-db.retention))
}

// resetUnacknowledged returns every deployment waiting for an
// acknowledgement to waiting for its gateway.
func (db *DB) resetUnacknowledged(ctx context.Context) error {
	if err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET sent_at = NULL,
			status = CASE status WHEN $1 THEN $2 ELSE status END
			WHERE status IN ($1, $3)`, StatusDeploying, StatusPending, StatusUndeploying)
		return err
	}); err != nil {
		return fmt.Errorf("reset unacknowledged deployments: %w", err)
	}
	return nil
}

// tombstonesEvery is how often old tombstones are forgotten.
const tombstonesEvery = time.Hour

// expireDue times out the unacknowledged deployments that are due, and
// finds when the next one is. It runs only when one is due, so an idle
// server makes no queries.
func (db *DB) expireDue(ctx context.Context) error {
	db.fetchMu.Lock()
	due := !db.expireAt.IsZero() && !db.clock().Before(db.expireAt)
	if due {
		db.expireAt = time.Time{}
	}
	db.fetchMu.Unlock()
	if !due {
		return nil
	}
	if err := db.ExpireAcks(ctx, db.clock().Add(-db.ackTimeout)); err != nil {
		db.scheduleExpiry(db.clock())
		return err
	}
	var oldest *time.Time
	if err := db.rstmts.QueryRowContext(ctx, `SELECT MIN(sent_at) FROM deployments WHERE status IN ($1, $2)`,
		StatusDeploying, StatusUndeploying).Scan(dbTimePtr{&oldest}); err != nil {
		return err
	}
	if oldest != nil {
		db.scheduleExpiry(*oldest)
	}
	return nil
}

// scheduleExpiry notes that a deployment was sent at sent and waits for
// its acknowledgement.
func (db *DB) scheduleExpiry(sent time.Time) {
	at := sent.Add(db.ackTimeout)
	db.fetchMu.Lock()
	if db.expireAt.IsZero() || at.Before(db.expireAt) {
		db.expireAt = at
	}
	db.fetchMu.Unlock()
}

// Sync does now the background work that is pending: fetch and last-seen
// times are written, and old revisions pruned.
func (db *DB) Sync(ctx context.Context) error {
	db.fetchMu.Lock()
	prune := db.prune
	db.prune = map[string]bool{}
	db.fetchMu.Unlock()
	var errs []error
	for apiID := range prune {
		if err := db.pruneRevisions(ctx, apiID); err != nil {
			db.schedulePrune(apiID) // again at the next round
			errs = append(errs, err)
		}
	}
	errs = append(errs, db.flushFetched(ctx), db.expireDue(ctx), db.expireKeysDue(ctx))
	if db.dialect == dialectPostgres {
		errs = append(errs, db.flushPresence(ctx), db.renewLease(ctx), db.pruneConsumerEvents(ctx))
	}
	now := db.clock()
	db.fetchMu.Lock()
	pruneTombstones := now.After(db.tombstonesAt)
	if pruneTombstones {
		db.tombstonesAt = now.Add(tombstonesEvery)
	}
	db.fetchMu.Unlock()
	if pruneTombstones {
		errs = append(errs, db.PruneTombstones(ctx, now.Add(-db.retention)))
	}
	return errors.Join(errs...)
}

// schedulePrune asks the background loop to prune the API's revisions.
func (db *DB) schedulePrune(apiID string) {
	db.fetchMu.Lock()
	db.prune[apiID] = true
	db.fetchMu.Unlock()
}

// pruneRevisions deletes the revisions of an API (of every API when apiID
// is empty) that are neither among its newest db.keep nor deployed to any
// gateway, nor named by a rollout (what it deploys, or what its gateways
// ran before it). A rollback can go back as far as what is kept.
func (db *DB) pruneRevisions(ctx context.Context, apiID string) error {
	cond, args := "", []any{db.keep}
	if apiID != "" {
		cond, args = "api_id = $2 AND ", append(args, apiID)
	}
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM api_revisions WHERE `+cond+`number <=
			(SELECT MAX(x.number) FROM api_revisions x WHERE x.api_id = api_revisions.api_id) - $1
			AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.revision_id = api_revisions.id)
			AND NOT EXISTS (SELECT 1 FROM rollouts ro WHERE ro.revision_id = api_revisions.id)
			AND NOT EXISTS (SELECT 1 FROM rollout_targets rt WHERE rt.previous_revision_id = api_revisions.id
				OR rt.revision_id = api_revisions.id)`, args...)
		return err
	})
}
