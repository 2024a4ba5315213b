package fleet

import (
	"context"
	"syscall"
	"testing"
	"time"

	"platform-api/store"
)

// TestWaitingForOtherReplicasDoesNotSpin: once a change is applied here, a
// deploy request waiting for the other replicas' reports sleeps until one
// comes (it once spun on the closed channel, burning a core for the whole
// wait of every deploy across replicas).
func TestWaitingForOtherReplicasDoesNotSpin(t *testing.T) {
	db, _, _, _ := newFixture(t)
	const wait = 400 * time.Millisecond
	f := New(Options{Store: db, DeliveryWait: wait})
	t.Cleanup(f.Close)
	c := &store.Change{ID: "applied-here"}
	f.mu.Lock()
	close(f.reportLocked(c.ID).ready)
	f.mu.Unlock()

	before := cpuTime(t)
	start := time.Now()
	f.awaitReport(context.Background(), c, map[string]bool{"another-replica": true}) // it never reports
	elapsed := time.Since(start)
	used := cpuTime(t) - before
	if elapsed < wait {
		t.Fatalf("returned after %v, before the wait of %v", elapsed, wait)
	}
	if used > elapsed/4 {
		t.Fatalf("the process used %v of CPU while a request waited %v for a report", used, elapsed)
	}
}

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
