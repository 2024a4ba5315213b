package simulate

import (
	"context"
	"errors"
	mathrand "math/rand/v2"
	"net"
	"net/url"
	"time"
)

// Several targets. -target may name several replicas of one server (one
// database): gateway i connects to target i % n, REST calls go to the
// targets in turn, deployment k through target k % n, and delivery latency
// is split by whether the gateway's connection is on the replica that
// handled the deploy request. A gateway whose connection ends without the
// run closing it has lost its replica: it moves, reconnecting to the next
// target in turn with backoff, as a gateway behind a load balancer would.

// Backoff of a moving gateway between attempts: it doubles from the first
// to the last, and each wait is drawn from its upper half, so that the
// gateways of a replica that died do not all knock at the same instant.
const (
	moveBackoffMin = 100 * time.Millisecond
	moveBackoffMax = 2 * time.Second
)

// holdProgressEvery is how often the hold's progress line is written when
// nothing changes; a change is written at once (checked every
// holdPollEvery).
const (
	holdProgressEvery = 2 * time.Second
	holdPollEvery     = 200 * time.Millisecond
)

// HoldReport is the fleet during -hold, with several targets: replicas may
// be killed meanwhile, and their gateways move to the others.
type HoldReport struct {
	Seconds float64 `json:"seconds"`
	// Lost is how many connections ended without the run closing them,
	// Moved how many gateways reconnected to another target meanwhile.
	Lost  int64 `json:"lostConnections"`
	Moved int64 `json:"moved"`
	// Live is how many gateways are connected at the end, and
	// GatewaysPerTarget where.
	Live              int   `json:"live"`
	GatewaysPerTarget []int `json:"gatewaysPerTarget"`
	// Converged: every gateway is connected and, on its current
	// connection, holds the last deployment (first generation: was sent
	// and downloaded it again; second: holds what it acknowledged) and the
	// other APIs; NotConverged counts the others.
	Converged    bool `json:"converged"`
	NotConverged int  `json:"notConverged"`
	// RecoveryMs: the first connection lost during the hold -> the last of
	// the gateways that lost theirs has converged again; 0 when none lost
	// one, or they have not all converged.
	RecoveryMs float64 `json:"recoveryMs,omitempty"`
}

// several reports whether the run plays against several replicas.
func (r *runner) several() bool { return len(r.targets) > 1 }

// call makes a REST call through the next target in turn.
func (r *runner) call(ctx context.Context, method, path string, body, out any, want ...int) error {
	first := int(r.turn.Add(1)-1) % len(r.targets)
	_, err := r.callVia(ctx, first, method, path, body, out, want...)
	return err
}

// callVia makes a REST call through target first, or, when a target cannot
// be reached (its replica is down), through the next one that can. It
// returns the index of the target that answered.
func (r *runner) callVia(ctx context.Context, first int, method, path string, body, out any, want ...int) (int, error) {
	var err error
	for k := range r.targets {
		at := (first + k) % len(r.targets)
		if err = r.targets[at].call(ctx, method, path, body, out, want...); !unreachable(err) {
			return at, err
		}
	}
	return first, err
}

// unreachable reports whether err is a failure to connect: the request was
// never sent, so sending it to another replica cannot do it twice.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// replicaGone reports whether a gateway's request failed because the
// replica it went to could not be reached or went away meanwhile (a
// transport error, not an answer), with several targets: then the
// gateway's connection to it ends too, and its move brings the state
// again, so it is no failure of the run.
func (r *runner) replicaGone(err error) bool {
	var ue *url.Error
	return r.several() && errors.As(err, &ue)
}

// move reconnects a gateway whose connection to target from ended without
// the run closing it, to the next target in turn, with backoff, until a
// connection is made, the run closes the gateway (churn, cleanup) or the
// run ends. A reconnection to another target counts as moved.
func (g *gateway) move(from int) {
	ctx := g.r.ctx
	wait := moveBackoffMin
	for k := 1; ; k++ {
		t := time.NewTimer(wait/2 + mathrand.N(wait/2))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		g.mu.Lock()
		moving := g.moving
		g.mu.Unlock()
		if !moving {
			return
		}
		at := (from + k) % len(g.r.targets)
		if ws, err := g.open(ctx, at); err == nil {
			if !g.attach(ws, at, true) {
				ws.Close()
				return
			}
			if at != from {
				g.r.moved.Add(1)
			}
			g.r.notify()
			return
		}
		wait = min(2*wait, moveBackoffMax)
	}
}

// holdState is a gateway as the hold sees it.
type holdState struct {
	connected bool
	at        int // target of its connection
	// converged: connected and, on this connection, converged on every
	// API, holding the last deployment; since convergedAt.
	converged   bool
	convergedAt time.Time
	lostAt      time.Time // when its last connection was lost
}

// holdState returns the gateway's state, where rev is the revision of the
// last deployment (empty when the run deployed nothing: with one API,
// being connected is then enough).
func (g *gateway) holdState(rev string) holdState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := holdState{connected: g.ws != nil, at: g.at, lostAt: g.lostAt,
		converged: g.ws != nil && !g.doneAt.IsZero() && (rev == "" || g.rev == rev), convergedAt: g.doneAt}
	if rev == "" && len(g.seen) == 1 {
		st.converged, st.convergedAt = st.connected, g.connectedAt
	}
	return st
}

// fleetState is what the hold's progress line shows.
type fleetState struct{ live, moved, converged int }

func (r *runner) fleetState(rev string) fleetState {
	st := fleetState{live: int(r.live.Load()), moved: int(r.moved.Load())}
	for _, g := range r.gws {
		if g.holdState(rev).converged {
			st.converged++
		}
	}
	return st
}

// holdReplicas keeps the fleet connected for -hold, or until ctx ends (an
// operator's interrupt ends the hold early, with a report), while
// replicas may go away. The progress line shows the fleet every 2 s and
// at once when it changes; at the end the report says how many gateways
// moved and whether all converged on rev, the last deployment, again.
func (r *runner) holdReplicas(ctx context.Context, rev string) *HoldReport {
	start := time.Now()
	lost0, moved0 := r.serverClosed.Load(), r.moved.Load()
	end := time.NewTimer(r.opt.Hold)
	defer end.Stop()
	poll := time.NewTicker(holdPollEvery)
	defer poll.Stop()
	var shown fleetState
	var shownAt time.Time
	for done := false; !done; {
		if st := r.fleetState(rev); st != shown || time.Since(shownAt) >= holdProgressEvery {
			r.progress("hold %s of %s: %d live, %d moved, %d of %d converged on the last deployment",
				time.Since(start).Truncate(time.Second), r.opt.Hold, st.live, st.moved, st.converged, len(r.gws))
			shown, shownAt = st, time.Now()
		}
		select {
		case <-poll.C:
		case <-end.C:
			done = true
		case <-ctx.Done():
			done = true
		}
	}
	h := &HoldReport{Seconds: time.Since(start).Seconds(), Lost: r.serverClosed.Load() - lost0,
		Moved: r.moved.Load() - moved0, GatewaysPerTarget: make([]int, len(r.targets)), Converged: true}
	var firstLost, lastDone time.Time
	for _, g := range r.gws {
		st := g.holdState(rev)
		if st.connected {
			h.Live++
			h.GatewaysPerTarget[st.at]++
		}
		if !st.converged {
			h.Converged = false
			h.NotConverged++
		}
		if st.lostAt.After(start) {
			if firstLost.IsZero() || st.lostAt.Before(firstLost) {
				firstLost = st.lostAt
			}
			if st.convergedAt.After(lastDone) {
				lastDone = st.convergedAt
			}
		}
	}
	if h.Converged && !firstLost.IsZero() {
		h.RecoveryMs = ms(lastDone.Sub(firstLost))
	}
	return h
}
