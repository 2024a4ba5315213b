package store

// The database's clock. What replicas compare (a lease against another
// replica's, a deployment sent by one and timed out by another, the stamps
// of changes and the startup sync's cut-off) is written and read on one
// clock: the database server's. A replica's own wall clock may be off by
// seconds, or stepped by NTP; none of that reaches the rows.
//
// Asking the database for the time in every transaction would cost a round
// trip each. Instead each replica reads the database's clock now and then
// (at start, then with every lease renewal) and carries it forward on its
// monotonic clock: the reading is off by at most half the round trip it
// took, plus the drift of the monotonic clock since (parts per million).
// On SQLite the process's clock is the database's.

import (
	"context"
	"time"
)

// clockSample is one reading of the database's clock.
type clockSample struct {
	local time.Time     // db.Now() halfway through the reading
	db    time.Time     // the database's clock then
	rtt   time.Duration // how long the reading took: its error is at most half
	taken time.Time     // when (the process's monotonic clock), to age it
}

// clockSampleMaxAge is how long a reading is kept against later ones that
// took longer (a loaded database answers slowly, and the error of a reading
// is half its round trip).
const clockSampleMaxAge = time.Minute

// clock is the database's clock as this replica reads it: on PostgreSQL
// the last reading of the server's clock carried forward, on SQLite db.Now.
// Every time written to a row or compared with one goes through it.
func (db *DB) clock() time.Time {
	return db.clockFrom(db.Now())
}

// clockFrom is the database's clock at now, a reading of db.Now.
func (db *DB) clockFrom(now time.Time) time.Time {
	if db.dialect != dialectPostgres {
		return now
	}
	db.clockMu.Lock()
	s := db.clockAt
	db.clockMu.Unlock()
	if s.db.IsZero() {
		return now
	}
	// Sub uses the monotonic readings when both have one: a step of the
	// wall clock since the reading does not move the result.
	return s.db.Add(now.Sub(s.local))
}

// ClockAt is t, a moment read on this process's clock (time.Now, as the
// hub stamps a connection's activity), on the database's clock: the
// database's clock now less the time elapsed since t, so a replica's wall
// clock off by any amount does not move it. The zero time stays zero.
//
// One moment converts to the same time on every call while the clock
// reading is the same: "now" is read once and serves as both this process's
// clock and the replica's (unless the replica's is set apart, as a test's
// skewed clock is), so it cancels out. Read twice, it was off by the tens
// of nanoseconds between the readings, and a gateway's lastSeenAt, shown
// live and then stored on disconnect, went back a microsecond now and then.
//
// Whether the replica's clock is this process's is told by reading it
// between two readings of time.Now: this process's falls between them
// however long the process was descheduled meanwhile. (A bound of 1 ms on
// the difference of two readings told it before: on a loaded machine the
// process was descheduled longer between them now and then, and the moment
// converted to times milliseconds apart.)
func (db *DB) ClockAt(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	now := time.Now().Round(0) // wall readings only, as t (time.Unix) is
	local := db.Now().Round(0)
	if after := time.Now().Round(0); !local.Before(now) && !local.After(after) {
		local = now // the same clock
	}
	return db.clockFrom(local).Add(-now.Sub(t))
}

// readClock reads the database server's clock, and keeps the reading if it
// is at least as good as the one held (or that one is old).
func (db *DB) readClock(ctx context.Context) error {
	if db.dialect != dialectPostgres {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, txTimeout)
	defer cancel()
	// The connection first, so that waiting for one is not taken for the
	// round trip.
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return db.unavailable(ctx, err)
	}
	defer conn.Close()
	var at time.Time
	t0 := db.Now()
	err = conn.QueryRowContext(ctx, `SELECT clock_timestamp()`).Scan(&at)
	t1 := db.Now()
	if err != nil {
		return db.unavailable(ctx, err)
	}
	rtt := t1.Sub(t0)
	s := clockSample{local: t0.Add(rtt / 2), db: at.UTC(), rtt: rtt, taken: time.Now()}
	db.clockMu.Lock()
	defer db.clockMu.Unlock()
	held := db.clockAt
	if held.db.IsZero() || rtt <= 2*held.rtt+time.Millisecond || time.Since(held.taken) > clockSampleMaxAge {
		db.clockAt = s
	}
	return nil
}

// clockOffset is how far this replica's clock (Config.Clock) is ahead of
// the database's, as last read; zero on SQLite.
func (db *DB) clockOffset() time.Duration {
	now := db.Now()
	return now.Round(0).Sub(db.clock().Round(0))
}
