package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"platform-api/httpx"
)

// TestOutageIs503: what the store meets when the database does not answer
// (its own transaction deadline passing while the caller still waits, a
// broken or reset connection) is answered 503 with the store's message, on
// either store; a caller that went away, or any other failure, is not an
// outage. The PostgreSQL fault tests cut a live database; this holds the
// rule on SQLite as well, where no outage can be staged in a test's time.
func TestOutageIs503(t *testing.T) {
	db := MustOpen(t)
	live := context.Background()
	gone, cancel := context.WithCancel(live)
	cancel()
	reset := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	for _, c := range []struct {
		name   string
		ctx    context.Context
		err    error
		outage bool
	}{
		{"our deadline", live, fmt.Errorf("begin write: %w", context.DeadlineExceeded), true},
		{"connection reset", live, reset, true},
		{"bad connection", live, driver.ErrBadConn, true},
		{"cut mid-answer", live, io.ErrUnexpectedEOF, true},
		{"caller gone", gone, fmt.Errorf("begin read: %w", context.Canceled), false},
		{"other failure", live, errors.New("disk I/O error"), false},
	} {
		err := db.unavailable(c.ctx, c.err)
		status, desc := httpx.ErrorStatus(err)
		if got := errors.Is(err, ErrUnavailable); got != c.outage {
			t.Errorf("%s: an outage: %v, want %v (%v)", c.name, got, c.outage, err)
		}
		if c.outage && (status != http.StatusServiceUnavailable || desc != "the database is unavailable; try again shortly") {
			t.Errorf("%s: answered %d %q, want 503", c.name, status, desc)
		}
		if !c.outage && status == http.StatusServiceUnavailable {
			t.Errorf("%s: answered 503", c.name)
		}
	}
}
