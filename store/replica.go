package store

// Replicas (PostgreSQL). Each process is a replica with an id and a lease it
// renews every third of the lease time; the live connections it holds are
// written per gateway, only when their number changes. Another replica's
// connections count only while its lease is live, so a replica that died
// without cleaning up stops counting once its lease expires, and its rows
// are removed by the others. On SQLite one process holds every connection:
// none of this is written, and the remote views are empty.

import (
	"context"
	"database/sql"
	"os"
	"time"

	"github.com/google/uuid"
)

// DefaultLease is the default of Config.Lease.
const DefaultLease = 15 * time.Second

// DefaultReplicaID is a replica id for this process: the host name and a
// random suffix.
func DefaultReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "replica"
	}
	return host + "-" + uuid.NewString()[:8]
}

// ReplicaID is this process's replica id.
func (db *DB) ReplicaID() string { return db.replica }

// Replicated reports whether several replicas may share the database
// (PostgreSQL).
func (db *DB) Replicated() bool { return db.dialect == dialectPostgres }

// liveReplica is the SQL condition that the replica aliased r is live: its
// lease is current (renewed after the parameter cutoff names) and the
// session its listener holds, when it names one, is still open. A replica
// that crashed is dead as soon as the database sees its connections close
// (at once for a killed process; a host that vanished is noticed by the
// database's TCP keepalives, or the lease expires first); one frozen, or
// cut off without a word, keeps its sessions and is judged by its lease.
func liveReplica(cutoff string) string {
	return `r.renewed_at > ` + cutoff + ` AND (r.listener_pid IS NULL OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.listener_pid))`
}

// LiveReplicas returns the other replicas whose lease is current: those
// that must hear a change before it holds everywhere.
func (db *DB) LiveReplicas(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	if !db.Replicated() {
		return out, nil
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		ids, err := queryStrings(ctx, tx, `SELECT r.id FROM replicas r WHERE r.id <> $1 AND `+liveReplica("$2"),
			db.replica, formatTime(db.clock().Add(-db.lease)))
		for _, id := range ids {
			out[id] = true
		}
		return err
	})
	return out, err
}

// Presence is a gateway's live connections on other replicas.
type Presence struct {
	Connections int
	// LastSeen is the latest lease renewal of a replica holding one: the
	// connection was live then.
	LastSeen time.Time
}

// NotePresence records that this replica holds n live connections of the
// gateway (0: none). It is written in the next background round.
func (db *DB) NotePresence(gatewayID string, n int) {
	if db.dialect != dialectPostgres {
		return
	}
	db.fetchMu.Lock()
	db.presence[gatewayID] = n
	db.fetchMu.Unlock()
}

// registerReplica starts this replica's lease and removes the replicas
// whose lease expired long ago.
func (db *DB) registerReplica(ctx context.Context) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE renewed_at < $1`, formatTime(now.Add(-2*db.lease))); err != nil {
			return err
		}
		// Its listener names its session once it listens (setListenerPID).
		_, err := tx.ExecContext(ctx, `INSERT INTO replicas (id, started_at, renewed_at) VALUES ($1, $2, $2)
			ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, renewed_at = excluded.renewed_at,
			listener_pid = NULL`,
			db.replica, formatTime(now))
		if err == nil {
			_, err = tx.ExecContext(ctx, `DELETE FROM gateway_connections WHERE replica_id = $1`, db.replica)
		}
		return err
	})
}

// renewLease renews this replica's lease when a third of it has passed,
// and removes the replicas whose lease expired long ago (their connection
// rows go with them).
func (db *DB) renewLease(ctx context.Context) error {
	// One renewal at a time: the background loop's, or one a write that
	// found this replica swept asks for (recordDeliveries).
	db.leaseMu.Lock()
	defer db.leaseMu.Unlock()
	// When it is due is this process's business: its monotonic clock, which
	// no step of the wall clock moves.
	start := time.Now()
	db.fetchMu.Lock()
	due := start.Sub(db.renewedAt) >= db.lease/3
	db.fetchMu.Unlock()
	if !due {
		return nil
	}
	// The database's clock is read again with each renewal (clock.go).
	if err := db.readClock(ctx); err != nil {
		db.log.Warn("could not read the database's clock; carrying the last reading forward", "err", err)
	}
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `UPDATE replicas SET renewed_at = $1 WHERE id = $2`, formatTime(now), db.replica)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Taken for dead (this process was stalled past its lease):
			// come back, with every connection it holds.
			if _, err := tx.ExecContext(ctx, `INSERT INTO replicas (id, started_at, renewed_at, listener_pid) VALUES ($1, $2, $2, $3)`,
				db.replica, formatTime(now), db.listenerPID()); err != nil {
				return err
			}
			// Counts not written yet are newer than what was written (a
			// gateway that left during the stall is pending at 0): they
			// win over the held ones, or a connection long gone would be
			// written back and counted until this replica restarts.
			db.fetchMu.Lock()
			all := db.allPresenceLocked()
			for gw, n := range db.presence {
				all[gw] = n
			}
			db.presence = all
			db.fetchMu.Unlock()
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM replicas WHERE renewed_at < $1`, formatTime(now.Add(-2*db.lease)))
		return err
	})
	if err == nil {
		db.fetchMu.Lock()
		db.renewedAt = start
		db.fetchMu.Unlock()
	}
	return err
}

// listenerPID is the session of this replica's listener, for its row (nil
// while it does not listen).
func (db *DB) listenerPID() any {
	if db.listener == nil {
		return nil
	}
	if pid := db.listener.pid.Load(); pid != 0 {
		return pid
	}
	return nil
}

// allPresenceLocked is every gateway this replica holds, to write again.
// db.fetchMu must be held.
func (db *DB) allPresenceLocked() map[string]int {
	out := make(map[string]int, len(db.held))
	for gw, n := range db.held {
		out[gw] = n
	}
	return out
}

// flushPresence writes the connection counts that changed.
func (db *DB) flushPresence(ctx context.Context) error {
	db.fetchMu.Lock()
	pending := db.presence
	if len(pending) == 0 {
		db.fetchMu.Unlock()
		return nil
	}
	db.presence = map[string]int{}
	db.fetchMu.Unlock()
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		for gw, n := range pending {
			var err error
			if n > 0 {
				_, err = tx.ExecContext(ctx, `INSERT INTO gateway_connections (gateway_id, replica_id, connections)
					SELECT id, $2, $3 FROM gateways WHERE id = $1
					ON CONFLICT (gateway_id, replica_id) DO UPDATE SET connections = excluded.connections`, gw, db.replica, n)
			} else {
				_, err = tx.ExecContext(ctx, `DELETE FROM gateway_connections WHERE gateway_id = $1 AND replica_id = $2`, gw, db.replica)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	db.fetchMu.Lock()
	defer db.fetchMu.Unlock()
	for gw, n := range pending {
		if err != nil {
			if _, newer := db.presence[gw]; !newer {
				db.presence[gw] = n // again at the next round
			}
			continue
		}
		if n > 0 {
			db.held[gw] = n
		} else {
			delete(db.held, gw)
		}
	}
	return err
}

// leaveReplicas ends this replica's lease at shutdown: its rows go, so the
// others stop counting its connections at once.
func (db *DB) leaveReplicas(ctx context.Context) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE id = $1`, db.replica)
		return err
	})
}

// RemotePresence returns the live connections of the gateways on the other
// replicas whose lease is live; a gateway with none is absent.
func (db *DB) RemotePresence(ctx context.Context, gatewayIDs []string) (map[string]Presence, error) {
	out := map[string]Presence{}
	if db.dialect != dialectPostgres || len(gatewayIDs) == 0 {
		return out, nil
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		return inChunks(ctx, tx, gatewayIDs, []any{db.replica, formatTime(db.clock().Add(-db.lease))}, func(in string) string {
			return `SELECT c.gateway_id, SUM(c.connections), MAX(r.renewed_at)
				FROM gateway_connections c JOIN replicas r ON r.id = c.replica_id
				WHERE c.replica_id <> $1 AND ` + liveReplica("$2") + ` AND c.gateway_id IN (` + in + `)
				GROUP BY c.gateway_id`
		}, func(rows *sql.Rows) error {
			var gw string
			var p Presence
			err := rows.Scan(&gw, &p.Connections, dbTime{&p.LastSeen})
			out[gw] = p
			return err
		})
	})
	return out, err
}

// ConnectionsByReplica returns, for each gateway, its live connections on
// each other replica whose lease is live.
func (db *DB) ConnectionsByReplica(ctx context.Context, gatewayIDs []string) (map[string]map[string]int, error) {
	out := map[string]map[string]int{}
	if db.dialect != dialectPostgres || len(gatewayIDs) == 0 {
		return out, nil
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		return inChunks(ctx, tx, gatewayIDs, []any{db.replica, formatTime(db.clock().Add(-db.lease))}, func(in string) string {
			return `SELECT c.gateway_id, c.replica_id, c.connections
				FROM gateway_connections c JOIN replicas r ON r.id = c.replica_id
				WHERE c.replica_id <> $1 AND ` + liveReplica("$2") + ` AND c.gateway_id IN (` + in + `)`
		}, func(rows *sql.Rows) error {
			var gw, replica string
			var n int
			err := rows.Scan(&gw, &replica, &n)
			if out[gw] == nil {
				out[gw] = map[string]int{}
			}
			out[gw][replica] = n
			return err
		})
	})
	return out, err
}

// ReplicasHolding returns the other live replicas that hold a connection
// of one of the gateways.
func (db *DB) ReplicasHolding(ctx context.Context, gatewayIDs []string) (map[string]bool, error) {
	out := map[string]bool{}
	if db.dialect != dialectPostgres || len(gatewayIDs) == 0 {
		return out, nil
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		out, err = idSet(ctx, tx, gatewayIDs, []any{db.replica, formatTime(db.clock().Add(-db.lease))}, func(in string) string {
			return `SELECT DISTINCT c.replica_id FROM gateway_connections c
				JOIN replicas r ON r.id = c.replica_id
				WHERE c.replica_id <> $1 AND ` + liveReplica("$2") + ` AND c.gateway_id IN (` + in + `)`
		})
		return err
	})
	return out, err
}
