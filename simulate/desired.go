package simulate

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// The large desired state. With -apis N (N > 1) every API is deployed to
// the whole fleet before it connects; the fleet then connects and the run
// waits until every gateway has applied all N (the server sends them as
// each connection's initial state, paced on what the gateway has done).
// Then every gateway drops, the server sees it go, and it reconnects: the
// run measures the time until every gateway has converged again, and
// whether the server closed any connection meanwhile. Gateways handle
// events one at a time and read (which answers pings) only between them,
// as real ones do, so a closed connection means heartbeats were not kept.
//
// What "applied all N" means follows the generation. The first downloads
// every api.deployed, and the server sends all N on every connect. The
// second holds what it applied across reconnects and applies only newer
// events; the server sends it only what it has not acknowledged (contract
// §6), so after a reconnect it is converged once it holds all N and its
// manifest is accepted, and the events it receives then are counted (none
// are expected). Its first connect is where it downloads and acknowledges
// all N.

// maxAPIs bounds -apis (each gateway keeps 12 bytes per API).
const maxAPIs = 100_000

// DesiredStateReport is the large-desired-state scenario.
type DesiredStateReport struct {
	APIs int `json:"apis"`
	// SetupSec is how long the N deploy requests took (gateways offline).
	SetupSec float64 `json:"setupDeploySeconds"`
	// Connect is the fleet's first connect, Reconnect the one after every
	// gateway dropped.
	Connect   PhaseReport `json:"connect"`
	Reconnect PhaseReport `json:"reconnect"`
}

// PhaseReport is one whole-fleet (re)connect and convergence.
type PhaseReport struct {
	// ConvergeMs: (re)connect started -> the last gateway has applied all
	// the APIs (first generation: downloaded; second: downloaded and
	// acknowledged, or held from before).
	ConvergeMs float64 `json:"convergeMs"`
	Converged  bool    `json:"converged"`
	// Events is how many api.deployed and api.undeployed frames the fleet
	// received from the start of the phase to its end.
	Events int64 `json:"events"`
	// Pongs is how many server pings the fleet answered meanwhile.
	Pongs int64 `json:"pongs"`
	// ServerClosed is how many connections the server ended meanwhile
	// (heartbeats are intact when none).
	ServerClosed int64 `json:"serverClosed"`
	// MaxEventMs is the longest a gateway spent on one event, not reading
	// (so not answering pings).
	MaxEventMs float64 `json:"maxEventHandlingMs"`
}

// deployAll deploys every API to the whole fleet, which is offline.
func (r *runner) deployAll(ctx context.Context) (*DesiredStateReport, error) {
	items := make([]map[string]any, len(r.gws))
	for i, g := range r.gws {
		items[i] = map[string]any{"gatewayId": g.id, "vhost": "sim.example.com"}
	}
	start := time.Now()
	var failed atomic.Int64
	r.parallel(ctx, len(r.apis), func(i int) {
		if err := r.call(ctx, "POST", "/api/v1/apis/"+r.apis[i]+"/deploy-revision", items, nil, 200); err != nil {
			failed.Add(1)
			r.fail("deploy API %d of %d: %v", i+1, len(r.apis), err)
		}
	}, "deploying every API to the fleet")
	if n := failed.Load(); n > 0 {
		return nil, fmt.Errorf("%d of %d APIs could not be deployed; first error: %s", n, len(r.apis), r.errors[0])
	}
	return &DesiredStateReport{APIs: len(r.apis), SetupSec: time.Since(start).Seconds()}, nil
}

// phaseStart is where the fleet's counters stood when a phase began.
type phaseStart struct {
	at                     time.Time
	events, pongs, dropped int64
}

// startPhase resets the longest event handling and notes the counters.
func (r *runner) startPhase() phaseStart {
	r.maxHandling.Store(0)
	return phaseStart{time.Now(), r.events.Load(), r.pongs.Load(), r.serverClosed.Load()}
}

// reconnectAll drops every gateway, waits until the server has seen them
// go, reconnects them and waits until they have converged.
func (r *runner) reconnectAll(ctx context.Context) PhaseReport {
	for _, g := range r.gws {
		g.disconnect()
	}
	if err := r.awaitSeen(ctx, r.gws, false); err != nil {
		r.fail("reconnect: %v", err)
	}
	ps := r.startPhase()
	r.forEach(ctx, r.gws, func(g *gateway) {
		if err := g.connect(ctx); err != nil {
			r.fail("reconnect %s: %v", g.name, err)
		}
	}, "reconnecting")
	return r.awaitConverged(ctx, ps, "reconnect")
}

// awaitConverged waits until every gateway has converged on all the APIs
// in its current connection, or has no connection (it failed to connect,
// or the server closed it), or -wait has passed since the phase began.
func (r *runner) awaitConverged(ctx context.Context, ps phaseStart, what string) PhaseReport {
	var p PhaseReport
	timeout := time.NewTimer(time.Until(ps.at.Add(r.opt.Wait)))
	defer timeout.Stop()
	progress := time.NewTicker(250 * time.Millisecond)
	defer progress.Stop()
	for {
		done, lost := 0, 0
		var last time.Time
		for _, g := range r.gws {
			at, connected := g.convergedAt()
			switch {
			case !at.IsZero():
				done++
				if at.After(last) {
					last = at
				}
			case !connected:
				lost++
			}
		}
		r.progress("%s: %d of %d gateways converged on %d APIs", what, done, len(r.gws), len(r.apis))
		if done+lost == len(r.gws) {
			p.Converged, p.ConvergeMs = lost == 0, ms(last.Sub(ps.at))
			if lost > 0 {
				r.fail("%s: %d gateways have no connection and did not converge", what, lost)
			}
			break
		}
		expired := false
		select {
		case <-r.kick:
		case <-progress.C:
		case <-timeout.C:
			expired = true
		case <-ctx.Done():
			expired = true
		}
		if expired {
			r.fail("%s: %d gateways did not converge within %s", what, len(r.gws)-done-lost, r.opt.Wait)
			p.ConvergeMs = ms(time.Since(ps.at))
			break
		}
	}
	p.Events = r.events.Load() - ps.events
	p.Pongs = r.pongs.Load() - ps.pongs
	p.ServerClosed = r.serverClosed.Load() - ps.dropped
	p.MaxEventMs = ms(time.Duration(r.maxHandling.Load()))
	return p
}

// notify wakes awaitConverged.
func (r *runner) notify() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// noteHandling records how long a gateway spent on one event.
func (r *runner) noteHandling(d time.Duration) {
	for {
		old := r.maxHandling.Load()
		if int64(d) <= old || r.maxHandling.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}
