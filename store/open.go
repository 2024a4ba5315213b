package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Config says which database to open and how the store behaves.
type Config struct {
	// DSN is a SQLite database file, or a PostgreSQL URL
	// (postgres://user:password@host:port/database?options).
	DSN string
	// MaxConns is the size of the connection pool (PostgreSQL), or of the
	// read-only pool (SQLite, whose writer has one connection). 0 means a
	// default: 16 on PostgreSQL, twice the CPUs (at least 4) on SQLite.
	MaxConns int
	// Sealer seals the secrets of API definitions at rest. Required.
	Sealer *Sealer
	// KeepRevisions is how many revisions of each API are kept besides
	// the ones deployed somewhere; older ones are pruned in the
	// background. 0 means DefaultKeepRevisions.
	KeepRevisions int
	// MaxGatewayCreatedAPIs is how many APIs one gateway may create
	// through its reports and imports (those that still exist). 0 means
	// DefaultMaxGatewayCreatedAPIs.
	MaxGatewayCreatedAPIs int
	// Log receives what the store does by itself (resealing, pruning
	// failures, a lost PostgreSQL listener). Nil discards it.
	Log *slog.Logger
	// AckTimeout is how long a deployment sent to a second-generation
	// gateway may wait for its acknowledgement before it is FAILED with
	// DEPLOYMENT_TIMEOUT. 0 means DefaultAckTimeout.
	AckTimeout time.Duration
	// TombstoneRetention is how long undeployments and deletions are
	// remembered for gateways that have not acknowledged them. 0 means
	// DefaultTombstoneRetention.
	TombstoneRetention time.Duration
	// ReplicaID names this process among the replicas sharing a
	// PostgreSQL database. Empty means DefaultReplicaID().
	ReplicaID string
	// Lease is how long a replica's connections count after its last
	// renewal (PostgreSQL). 0 means DefaultLease.
	Lease time.Duration
	// Clock is this process's wall clock; nil means time.Now. On
	// PostgreSQL it is not what rows are stamped with: the database's
	// clock is (clock.go). Tests skew it.
	Clock func() time.Time
}

// Defaults of Config.
const (
	DefaultKeepRevisions      = 20
	DefaultAckTimeout         = 60 * time.Second
	DefaultTombstoneRetention = 30 * 24 * time.Hour
	// DefaultMaxGatewayCreatedAPIs is generous: a gateway reports what it
	// was configured with by hand, not a catalogue.
	DefaultMaxGatewayCreatedAPIs = 5000
)

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// CheckDSN refuses a DSN that looks like a URL of a database this server
// does not speak (postgress://, mysql://): taken as a SQLite path, it would
// quietly make a new database in a directory named after the scheme. A
// SQLite path (absolute or relative) and postgres:// or postgresql:// URLs
// pass.
func CheckDSN(dsn string) error {
	if IsPostgres(dsn) {
		return nil
	}
	scheme, _, ok := strings.Cut(dsn, "://")
	if !ok || scheme == "" {
		return nil
	}
	for i, r := range scheme {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (i == 0 || !(r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return nil // not a scheme: a path that happens to hold "://"
		}
	}
	return fmt.Errorf("%q is not a database this server speaks: use postgres://… (or postgresql://…) for PostgreSQL, or a file path for SQLite", scheme+"://")
}

// dialect is the kind of database behind a DB.
type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

// Open opens the database cfg.DSN names (creating a SQLite file if needed)
// and brings its schema up to date. A database whose schema is newer than
// this binary knows is refused, so that an older binary never writes to a
// newer schema.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("open database: no encryption key for secrets at rest")
	}
	if cfg.KeepRevisions <= 0 {
		cfg.KeepRevisions = DefaultKeepRevisions
	}
	if cfg.MaxGatewayCreatedAPIs <= 0 {
		cfg.MaxGatewayCreatedAPIs = DefaultMaxGatewayCreatedAPIs
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
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = DefaultReplicaID()
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	db := &DB{Now: cfg.Clock, sealer: cfg.Sealer, keep: cfg.KeepRevisions, maxGatewayAPIs: cfg.MaxGatewayCreatedAPIs, log: cfg.Log, prune: map[string]bool{},
		ackTimeout: cfg.AckTimeout, retention: cfg.TombstoneRetention, origin: uuid.NewString(),
		replica: cfg.ReplicaID, lease: cfg.Lease, presence: map[string]int{}, held: map[string]int{},
		fetched: map[fetchKey]time.Time{}, seen: map[string]time.Time{}, stopFlush: make(chan struct{}), flushDone: make(chan struct{})}
	if err := CheckDSN(cfg.DSN); err != nil {
		return nil, err
	}
	var err error
	if IsPostgres(cfg.DSN) {
		db.dialect = dialectPostgres
		if err := db.openPostgres(ctx, cfg); err != nil {
			return nil, err
		}
	} else {
		db.writeSlot = make(chan struct{}, 1)
		if db.write, db.read, err = openSQLite(cfg.DSN, cfg.MaxConns); err != nil {
			return nil, err
		}
	}
	db.wstmts = newStmtCache(db.write, db.dialect == dialectSQLite, &db.statements)
	db.rstmts = newStmtCache(db.read, db.dialect == dialectSQLite, &db.statements)
	fail := func(err error) (*DB, error) {
		db.closePools()
		return nil, err
	}
	if db.dialect == dialectSQLite {
		if err := db.checkWAL(ctx); err != nil {
			return fail(err)
		}
	}
	if err := db.migrate(ctx); err != nil {
		return fail(err)
	}
	if err := db.atStart(ctx); err != nil {
		return fail(err)
	}
	if db.dialect == dialectPostgres {
		if err := db.readClock(ctx); err != nil {
			return fail(fmt.Errorf("read the database's clock: %w", err))
		}
		if off := db.clockOffset(); off.Abs() > time.Second {
			db.log.Warn("this replica's clock is off the database's; rows are stamped with the database's, but tokens' times and logs use this one",
				"ahead", off.Round(time.Millisecond))
		}
		if err := db.registerReplica(ctx); err != nil {
			return fail(err)
		}
		db.renewedAt = time.Now()
		if err := db.startListener(ctx); err != nil {
			return fail(err)
		}
	}
	go db.flushLoop(db.stopFlush, db.flushDone)
	return db, nil
}

// Close stops the background work and closes the pools.
func (db *DB) Close() error {
	var err error
	db.closeOnce.Do(func() {
		close(db.stopFlush)
		<-db.flushDone
		if db.listener != nil {
			db.listener.stop()
		}
		if db.dialect == dialectPostgres {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := db.leaveReplicas(ctx); err != nil {
				db.log.Warn("could not end this replica's lease; the others ignore its connections once it expires", "err", err)
			}
			cancel()
		}
		err = db.closePools()
	})
	return err
}

func (db *DB) closePools() error {
	db.wstmts.close()
	db.rstmts.close()
	errs := []error{db.write.Close()}
	if db.read != db.write {
		errs = append(errs, db.read.Close())
	}
	return errors.Join(errs...)
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.read.PingContext(ctx); err != nil {
		return db.unavailable(ctx, err)
	}
	return nil
}

// Dialect names the database: "sqlite" or "postgres".
func (db *DB) Dialect() string {
	if db.dialect == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}
