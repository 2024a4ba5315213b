package store

// PostgreSQL, for operators who run several replicas on one database.
//
// The repositories' SQL is the same on both stores. What differs lives
// here: opening (through pgx's database/sql adapter, so that every query
// runs unchanged; the adapter's per-connection statement cache replaces
// ours), error kinds by SQLSTATE, and how committed changes are published.
// A transaction that records changes notifies them (pg_notify) before it
// commits: PostgreSQL delivers the notifications when, and only if, it
// commits, in commit order, to every session listening, this process's own
// included. One dedicated connection per process listens and publishes them
// one at a time, so every replica hears every change in the same order.
// Payloads are small references (an API id and the time of the change);
// the listener reads the rows they name, or uses the change as its own
// process made it.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// defaultConnectTimeout bounds a connection attempt when the URL sets none.
const defaultConnectTimeout = 5 * time.Second

// openPostgres opens the pool and checks that the server answers.
func (db *DB) openPostgres(ctx context.Context, cfg Config) error {
	conf, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return fmt.Errorf("PostgreSQL URL %s: %s", redactURL(cfg.DSN), scrub(err.Error(), cfg.DSN))
	}
	if conf.ConnectTimeout == 0 {
		conf.ConnectTimeout = defaultConnectTimeout
	}
	if conf.RuntimeParams["application_name"] == "" {
		conf.RuntimeParams["application_name"] = "platform-api"
	}
	db.pgConfig = conf
	db.dsn = cfg.DSN
	pool := stdlib.OpenDB(*conf)
	n := cfg.MaxConns
	if n <= 0 {
		n = 16
	}
	pool.SetMaxOpenConns(n)
	pool.SetMaxIdleConns(n)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	db.write, db.read = pool, pool
	pctx, cancel := context.WithTimeout(ctx, conf.ConnectTimeout+time.Second)
	defer cancel()
	var schema string
	if err := pool.QueryRowContext(pctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		pool.Close()
		return connectError(conf, cfg.DSN, err)
	}
	// One channel per schema, so that stores in different schemas of one
	// database (tests, side-by-side installations) never hear each other.
	db.channel = "platform_changes"
	if schema != "public" {
		db.channel += "_" + schema
	}
	return nil
}

// connectError words a failed first connection: what the server answered
// when it answered (a missing database or role, a refused password), and
// only otherwise that it does not answer.
func connectError(conf *pgx.ConnConfig, dsn string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("PostgreSQL at %s does not answer: %s", hostOf(conf), scrub(err.Error(), dsn))
	}
	hint := ""
	switch pgErr.Code {
	case "3D000": // invalid_catalog_name
		hint = fmt.Sprintf(": create it (createdb -h %s -U <an admin role> %s) or name another database in the URL", conf.Host, conf.Database)
	case "28000": // invalid_authorization_specification: no such role, or pg_hba refused
		hint = ": create the role, or use another user in the URL (and check pg_hba.conf)"
	case "28P01": // invalid_password
		hint = ": check the password in the URL"
	case "42501": // insufficient_privilege
		hint = ": grant the role CONNECT on the database"
	case "53300": // too_many_connections
		hint = ": the server has no connection slot free; lower PLATFORM_DB_MAX_CONNS or raise max_connections"
	}
	return fmt.Errorf("PostgreSQL at %s answered: %s (SQLSTATE %s)%s", hostOf(conf), scrub(pgErr.Message, dsn), pgErr.Code, hint)
}

// hostOf names the server of a configuration, never its password.
func hostOf(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s:%d (database %q, user %q)", c.Host, c.Port, c.Database, c.User)
}

// redactURL is a PostgreSQL URL with its password replaced.
func redactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// scrub removes the URL's password from a message, should a driver have
// quoted it.
func scrub(msg, dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return msg
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

// RedactedDSN is how a DSN may appear in logs: a PostgreSQL URL without its
// password, a SQLite path as it is.
func RedactedDSN(dsn string) string {
	if IsPostgres(dsn) {
		return redactURL(dsn)
	}
	return dsn
}

// pgCode is the SQLSTATE of a PostgreSQL error, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// pgConstraint is the name of the constraint a PostgreSQL error broke, or
// "". It is read from the error itself: after an error PostgreSQL refuses
// every further statement of the transaction, so it cannot be asked.
func pgConstraint(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.ConstraintName
	}
	return ""
}

// retryable reports whether a transaction failed in a way that running it
// again resolves: a serialization failure or a deadlock (PostgreSQL), or
// errRetry.
func retryable(err error) bool {
	switch pgCode(err) {
	case "40001", "40P01":
		return true
	}
	return errors.Is(err, errRetry)
}

// unavailable turns an error that says the database cannot be reached, or
// did not answer in time, into ErrUnavailable (503). A context the caller
// ended is left alone.
// Classify is unavailable for the layers above: an error that comes from
// losing the database, whatever path it took, becomes ErrUnavailable (a
// 503); every other error passes unchanged. The HTTP adapters run every
// failure through it.
func (db *DB) Classify(ctx context.Context, err error) error {
	if db == nil {
		return err
	}
	return db.unavailable(ctx, err)
}

func (db *DB) unavailable(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	// A deadline passed while the caller's context is live was ours
	// (txTimeout): the database did not answer in time.
	if isConnectionError(err) || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		cause := err
		if db.dsn != "" {
			cause = errors.New(scrub(err.Error(), db.dsn))
		}
		return &Error{kind: ErrUnavailable, msg: "the database is unavailable; try again shortly", Cause: cause}
	}
	return err
}

func isConnectionError(err error) bool {
	code := pgCode(err)
	switch {
	case strings.HasPrefix(code, "08"), code == "57P01", code == "57P02", code == "57P03", code == "53300":
		return true
	case code != "":
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, sql.ErrConnDone) || errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || pgconn.Timeout(err)
}

// notice is the payload of a change's notification: a reference, well
// under PostgreSQL's 8,000-byte limit whatever the change's size.
type notice struct {
	ID      string     `json:"id"`
	Kind    ChangeKind `json:"k"`
	Origin  string     `json:"o"`
	API     string     `json:"a,omitempty"`
	Gateway string     `json:"g,omitempty"`
	Token   string     `json:"t,omitempty"`
	At      string     `json:"at,omitempty"`
	APIs    []string   `json:"as,omitempty"`
}

// maxNoticeAPIs is how many API ids one status notification carries.
const maxNoticeAPIs = 100

// notices are the notifications of a change.
func (db *DB) notices(c *Change) []notice {
	n := notice{ID: c.ID, Kind: c.Kind, Origin: db.origin, Gateway: c.GatewayID, Token: c.TokenID}
	if len(c.Deployments) > 0 {
		d := c.Deployments[0]
		n.API, n.At = d.APIID, formatTime(d.PerformedAt)
		if c.Kind == ChangeUndeployed {
			n.Gateway = d.GatewayID
		}
	}
	if len(c.APIIDs) == 0 {
		return []notice{n}
	}
	var out []notice
	for start := 0; start < len(c.APIIDs); start += maxNoticeAPIs {
		part := n
		part.APIs = c.APIIDs[start:min(start+maxNoticeAPIs, len(c.APIIDs))]
		out = append(out, part)
	}
	return out
}

// notify queues the transaction's changes for its commit, and tells the
// listener to expect them.
func (db *DB) notify(ctx context.Context, t *Tx) error {
	for _, c := range t.changes {
		for _, n := range db.notices(c) {
			payload, err := json.Marshal(n)
			if err != nil {
				return err
			}
			if _, err := t.ExecContext(ctx, `SELECT pg_notify($1, $2)`, db.channel, string(payload)); err != nil {
				return fmt.Errorf("notify: %w", err)
			}
		}
	}
	db.listener.expect(t.changes)
	return nil
}

// listener holds the connection that listens for changes.
type listener struct {
	db *DB

	mu      sync.Mutex
	pending map[string]*Change // this process's changes, by ID, until heard
	conn    *pgx.Conn
	// pid is the listening session's backend, named in this replica's row
	// so that the others see it die with its process (liveReplica).
	pid atomic.Int32

	cancel context.CancelFunc
	done   chan struct{}
}

// startListener connects and listens before it returns, so that no change
// committed after Open is missed, then serves notifications in the
// background.
func (db *DB) startListener(ctx context.Context) error {
	l := &listener{db: db, pending: map[string]*Change{}, done: make(chan struct{})}
	conn, err := l.connect(ctx)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	db.listener = l
	go l.run(lctx, conn)
	return nil
}

func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	conf := l.db.pgConfig.Copy()
	conf.RuntimeParams["application_name"] += " listener"
	conn, err := pgx.ConnectConfig(ctx, conf)
	if err != nil {
		return nil, fmt.Errorf("listen for changes on %s: %s", hostOf(conf), scrub(err.Error(), l.db.dsn))
	}
	for _, ch := range []string{l.db.channel, l.db.reportChannel()} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("listen for changes: %s", scrub(err.Error(), l.db.dsn))
		}
	}
	// This session is the replica's sign of life besides its lease.
	var pid int32
	if err := conn.QueryRow(ctx, `UPDATE replicas SET listener_pid = pg_backend_pid() WHERE id = $1 RETURNING listener_pid`,
		l.db.replica).Scan(&pid); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		conn.Close(ctx)
		return nil, fmt.Errorf("name the listening session: %s", scrub(err.Error(), l.db.dsn))
	}
	if pid == 0 { // the row was swept (a stall): renewLease writes it back with the pid
		if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("name the listening session: %s", scrub(err.Error(), l.db.dsn))
		}
	}
	l.pid.Store(pid)
	return conn, nil
}

// run publishes notifications until stopped; when the connection is lost
// it reconnects with backoff, and since it cannot know what it missed,
// asks for a resynchronization.
func (l *listener) run(ctx context.Context, conn *pgx.Conn) {
	defer close(l.done)
	backoff := 100 * time.Millisecond
	for {
		l.mu.Lock()
		l.conn = conn
		l.mu.Unlock()
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				break
			}
			backoff = 100 * time.Millisecond
			if n.Channel == l.db.reportChannel() {
				l.db.receiveReport(n.Payload)
			} else if err := l.dispatch(ctx, n.Payload); err != nil {
				// A change heard but not read is as good as missed: listen
				// again, and resynchronize as after a lost connection.
				l.db.log.Warn("could not read a change; listening again and resynchronizing the live gateways",
					"kind", err.kind, "err", err.err)
				break
			}
		}
		conn.Close(context.Background())
		if ctx.Err() != nil {
			return
		}
		l.db.log.Warn("lost the PostgreSQL connection that listens for changes; reconnecting")
		for {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 10*time.Second)
			cctx, cancel := context.WithTimeout(ctx, l.db.pgConfig.ConnectTimeout+time.Second)
			c, err := l.connect(cctx)
			cancel()
			if err == nil {
				conn = c
				break
			}
			if ctx.Err() != nil {
				return
			}
			l.db.log.Warn("could not listen for changes yet", "err", err, "retryIn", backoff)
		}
		// What was committed while no one listened was not heard.
		l.mu.Lock()
		l.pending = map[string]*Change{}
		l.mu.Unlock()
		l.db.log.Info("listening for changes again; resynchronizing the live gateways")
		l.db.resyncNow()
	}
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
}

// expect notes changes this process is committing.
func (l *listener) expect(cs []*Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		l.pending[c.ID] = c
	}
}

// settle forgets the changes of a transaction that did not commit.
func (l *listener) settle(cs []*Change, committed bool) {
	if committed {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		delete(l.pending, c.ID)
	}
}

// readError is a change dispatch heard but could not read.
type readError struct {
	kind ChangeKind
	err  error
}

// Tries to read a change before it counts as missed.
const readTries = 3

// dispatch publishes the change a notification names. A change it cannot
// read, after a few tries (a saturated pool, a short outage), is returned
// as an error: the caller then treats it as missed.
func (l *listener) dispatch(ctx context.Context, payload string) *readError {
	var n notice
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		l.db.log.Warn("ignored a malformed change notification", "err", err)
		return nil
	}
	l.mu.Lock()
	c := l.pending[n.ID]
	delete(l.pending, n.ID)
	l.mu.Unlock()
	if c == nil {
		var err error
		for try := 1; ; try++ {
			if c, err = l.db.changeFromNotice(ctx, &n); err == nil {
				break
			}
			if try == readTries || ctx.Err() != nil {
				return &readError{n.Kind, err}
			}
			select {
			case <-time.After(time.Duration(try) * 100 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	l.db.tokens.forget(c)
	if l.db.publish != nil {
		l.db.publish(c)
	}
	return nil
}

// changeFromNotice reads the change a notification of another process (or
// of this one, forgotten) names.
func (db *DB) changeFromNotice(ctx context.Context, n *notice) (*Change, error) {
	db.resyncMu.Lock()
	fault := db.readFault
	db.resyncMu.Unlock()
	if fault != nil {
		if err := fault(n.Kind); err != nil {
			return nil, err
		}
	}
	c := &Change{ID: n.ID, Kind: n.Kind, Local: n.Origin == db.origin, Origin: n.Origin, GatewayID: n.Gateway,
		TokenID: n.Token, APIIDs: n.APIs}
	if n.Kind == ChangeConsumer {
		var err error
		c.Consumer, err = db.readConsumerEvents(ctx, n.ID)
		return c, err
	}
	if n.API == "" {
		return c, nil
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		switch n.Kind {
		case ChangeDeployed:
			c.Deployments, err = queryDeployments(ctx, tx, `WHERE d.api_id = $1 AND d.performed_at = $2 AND d.state = $3`,
				n.API, n.At, StateDeployed)
		case ChangeUndeployed:
			c.Deployments, err = queryDeployments(ctx, tx, `WHERE d.api_id = $1 AND d.gateway_id = $2 AND d.performed_at = $3 AND d.state = $4`,
				n.API, n.Gateway, n.At, StateUndeployed)
		case ChangeAPIDeleted:
			var deleted []*DeletedDeployment
			if deleted, err = queryDeleted(ctx, tx, `WHERE api_id = $1 AND deleted_at = $2`, n.API, n.At); err == nil {
				for _, d := range deleted {
					c.Deployments = append(c.Deployments, &Deployment{APIID: d.APIID, GatewayID: d.GatewayID,
						DeploymentID: d.DeploymentID, Vhost: d.Vhost, State: d.State, PerformedAt: d.DeletedAt})
				}
			}
		}
		return err
	})
	return c, err
}

// SetChangeReadFault makes the listener's reads of other processes'
// changes fail while fn returns an error: tests use it to stand for a
// saturated pool or a lost read, which a running database seldom makes on
// cue. Nil removes it.
func (db *DB) SetChangeReadFault(fn func(ChangeKind) error) {
	db.resyncMu.Lock()
	db.readFault = fn
	db.resyncMu.Unlock()
}

// Delivery reports across replicas. A replica that delivers another
// replica's change tells it how many of its connections took each
// gateway's event, so that the request that made the change can answer for
// the whole fleet. Reports go on a channel of their own, addressed to the
// origin process, in chunks under the payload limit.

// ReportEntry is one gateway's line of a delivery report.
type ReportEntry struct {
	GatewayID   string
	Connections int // live connections that took the event
	Gen2        int // of which second-generation
	Joining     int // live connections whose generation was not known yet
}

// Report is one replica's delivery report of one change.
type Report struct {
	ChangeID string
	Replica  string
	Entries  []ReportEntry
	Part     int // 1-based
	Parts    int
}

type reportPayload struct {
	Change  string  `json:"c"`
	To      string  `json:"o"`
	Replica string  `json:"r"`
	Part    int     `json:"i"`
	Parts   int     `json:"n"`
	Entries [][]any `json:"g"`
}

// reportChunk is how many entries one report notification carries (an
// entry is about 50 bytes).
const reportChunk = 120

func (db *DB) reportChannel() string { return strings.Replace(db.channel, "changes", "reports", 1) }

// SetReportReceiver sets who hears the delivery reports addressed to this
// process. Set it before the first write.
func (db *DB) SetReportReceiver(fn func(Report)) {
	db.resyncMu.Lock()
	db.onReport = fn
	db.resyncMu.Unlock()
}

// SendReport sends what delivering a change made by the process origin did
// here. An empty report is sent too: the origin then stops waiting for
// this replica.
func (db *DB) SendReport(ctx context.Context, changeID, origin string, entries []ReportEntry) error {
	if db.dialect != dialectPostgres {
		return nil
	}
	parts := max(1, (len(entries)+reportChunk-1)/reportChunk)
	for i := range parts {
		chunk := entries[min(i*reportChunk, len(entries)):min((i+1)*reportChunk, len(entries))]
		p := reportPayload{Change: changeID, To: origin, Replica: db.replica, Part: i + 1, Parts: parts, Entries: make([][]any, len(chunk))}
		for j, e := range chunk {
			p.Entries[j] = []any{e.GatewayID, e.Connections, e.Gen2, e.Joining}
		}
		payload, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if _, err := db.write.ExecContext(ctx, `SELECT pg_notify($1, $2)`, db.reportChannel(), string(payload)); err != nil {
			return db.unavailable(ctx, err)
		}
	}
	return nil
}

// receiveReport hands a report addressed to this process to its receiver.
func (db *DB) receiveReport(payload string) {
	var p reportPayload
	if err := json.Unmarshal([]byte(payload), &p); err != nil || p.To != db.origin {
		return
	}
	r := Report{ChangeID: p.Change, Replica: p.Replica, Part: p.Part, Parts: p.Parts}
	for _, e := range p.Entries {
		if len(e) < 3 {
			continue
		}
		gw, _ := e[0].(string)
		n, _ := e[1].(float64)
		g2, _ := e[2].(float64)
		var j float64
		if len(e) > 3 { // absent from a replica of an older version
			j, _ = e[3].(float64)
		}
		r.Entries = append(r.Entries, ReportEntry{GatewayID: gw, Connections: int(n), Gen2: int(g2), Joining: int(j)})
	}
	db.resyncMu.Lock()
	fn := db.onReport
	db.resyncMu.Unlock()
	if fn != nil {
		fn(r)
	}
}
