// Package rollout drives progressive rollouts: a revision deployed to
// gateways wave by wave through fleet.Deploy, each wave started once the
// previous one has settled and the pause has passed, and no further wave
// once more gateways failed than the rollout allows.
//
// A wave settles when each of its gateways has: second generation, DEPLOYED
// (acknowledged); first generation, DELIVERED and the revision downloaded
// (a weaker signal: the gateway took the event and fetched the document,
// nothing says it applied it). FAILED (acknowledged failure, or the fleet's
// acknowledgement timeout) and a gateway still unsettled when the wave's
// timeout passes count as failures.
//
// Exactly one replica drives a rollout: the one holding its lease (store
// ClaimRollouts; SQLite has one process). Every step is a conditional
// update of the stored state naming the wave it starts from, and a wave's
// deploy checks, inside the deploy's own transaction (after the API's row
// lock, which every deploy of the API takes), that the rollout is still at
// that wave, driven here, and that none of the wave's gateways was deployed
// since the wave began. So a wave is deployed once, whichever replica tries
// it and whenever one stops, and a driver that starts (a restart, or a
// replica taking over an expired lease) resumes at the stored wave.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"platform-api/fleet"
	"platform-api/store"
)

// Error codes of gateways failed by the rollout itself (a gateway's own
// failure keeps the code it acknowledged).
const (
	CodeWaveTimeout = "WAVE_TIMEOUT"        // not settled within waveTimeout
	CodeReplaced    = "DEPLOYMENT_REPLACED" // its deployment was replaced or undeployed meanwhile
	CodeGone        = "GATEWAY_NOT_FOUND"   // its deployment is gone (the gateway was deleted)
)

// Options configure a Driver.
type Options struct {
	Store *store.DB
	Fleet *fleet.Fleet
	Log   *slog.Logger
	// Poll is the backstop: how often a waiting rollout reads its state
	// again though nothing woke it (another replica's pause or abort).
	// Default 1 s. A wave waiting for first-generation downloads, which
	// raise no status change, reads it every FetchPoll.
	Poll time.Duration
}

// gatherAcks is how long a wave woken by a status change waits before it
// reads its gateways again (the fleet writes acknowledgements every 10 ms).
const gatherAcks = 20 * time.Millisecond

// FetchPoll is how often a wave waiting for first-generation gateways'
// downloads looks again (writing first the download times noted here; other
// replicas write theirs every 250 ms).
const FetchPoll = 100 * time.Millisecond

// Driver drives the rollouts this replica holds.
type Driver struct {
	db    *store.DB
	fleet *fleet.Fleet
	log   *slog.Logger
	poll  time.Duration

	mu      sync.Mutex
	running map[string]chan struct{} // rollout id -> its goroutine's kick
	waiters map[string]chan struct{} // rollout id -> closed at its next step
	stop    chan struct{}
	stopped bool
	wg      sync.WaitGroup
}

// New makes a driver; Start starts it.
func New(o Options) *Driver {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	return &Driver{db: o.Store, fleet: o.Fleet, log: o.Log, poll: o.Poll, running: map[string]chan struct{}{},
		waiters: map[string]chan struct{}{}, stop: make(chan struct{})}
}

// Start claims the RUNNING rollouts no live replica drives (every one, at a
// start on SQLite) and drives them, and keeps claiming.
func (d *Driver) Start() {
	d.wg.Add(1)
	go d.claimLoop()
}

// Stop stops driving, as if the process had died: the leases stay until
// they expire. Close is the clean way.
func (d *Driver) Stop() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.stopped = true
	close(d.stop)
	d.mu.Unlock()
	d.wg.Wait()
}

// Close stops driving and gives up this replica's leases, so another
// replica takes its rollouts over at once.
func (d *Driver) Close() {
	d.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.db.ReleaseRollouts(ctx); err != nil {
		d.log.Warn("could not release the rollouts this replica drove; another takes them once the lease expires", "err", err)
	}
}

// Drive starts driving a rollout this replica has just leased (created,
// resumed or rolled back here) without waiting for the next claim.
func (d *Driver) Drive(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k, ok := d.running[id]; ok {
		select {
		case k <- struct{}{}:
		default:
		}
		return
	}
	d.startLocked(id)
}

// startLocked starts the goroutine driving a rollout. d.mu must be held.
func (d *Driver) startLocked(id string) {
	if d.stopped {
		return
	}
	k := make(chan struct{}, 1)
	d.running[id] = k
	d.wg.Add(1)
	go d.drive(id, k)
}

// Changed returns a channel closed when this replica next steps the
// rollout (another replica's steps are not seen: poll as a backstop).
func (d *Driver) Changed(id string) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch, ok := d.waiters[id]
	if !ok {
		ch = make(chan struct{})
		d.waiters[id] = ch
	}
	return ch
}

func (d *Driver) changed(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch, ok := d.waiters[id]; ok {
		close(ch)
		delete(d.waiters, id)
	}
}

func (d *Driver) claimLoop() {
	defer d.wg.Done()
	every := max(d.db.RolloutLease()/3, 50*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ids, err := d.db.ClaimRollouts(ctx)
		cancel()
		if err != nil {
			d.log.Warn("could not claim rollouts; trying again", "err", err)
		}
		d.mu.Lock()
		for _, id := range ids {
			if _, ok := d.running[id]; !ok {
				d.startLocked(id)
			}
		}
		d.mu.Unlock()
		select {
		case <-t.C:
		case <-d.stop:
			return
		}
	}
}

// drive steps one rollout until it is no longer this replica's to drive.
func (d *Driver) drive(id string, kick chan struct{}) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		delete(d.running, id)
		d.mu.Unlock()
		d.changed(id)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var statusChanged <-chan struct{}
	apiID := ""
	failures := 0
	for {
		if apiID != "" {
			statusChanged = d.fleet.StatusChange(apiID)
		}
		r, wait, err := d.step(ctx, id)
		d.changed(id)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, store.ErrNotFound):
			return // deleted with its API
		case err != nil:
			failures++
			wait = min(time.Duration(failures)*100*time.Millisecond, 5*time.Second)
			d.log.Warn("rollout step failed; trying again", "rollout", id, "in", wait, "err", err)
		default:
			failures = 0
		}
		if r != nil {
			if r.Status != store.RolloutRunning || r.LeaseOwner != d.db.ReplicaID() {
				return
			}
			if apiID == "" {
				apiID = r.APIID
				statusChanged = d.fleet.StatusChange(apiID)
			}
		}
		if wait == 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-statusChanged:
			// Acknowledgements of a large wave come in many small batches:
			// let a few gather before the wave is read again.
			select {
			case <-time.After(gatherAcks):
			case <-ctx.Done():
			}
		case <-kick:
		case <-ctx.Done():
		}
		timer.Stop()
	}
}

// step takes the next step of a rollout and says how long, at most, to
// wait before the next (0: at once). It returns the rollout as it read it
// (nil when it could not), whose status and lease say whether to go on.
func (d *Driver) step(ctx context.Context, id string) (*store.Rollout, time.Duration, error) {
	r, err := d.db.DriveRollout(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	if r.Status != store.RolloutRunning || r.LeaseOwner != d.db.ReplicaID() {
		return r, 0, nil
	}
	switch r.Phase {
	case store.PhaseSettled:
		if r.Wave >= len(r.Waves) {
			_, err := d.db.CompleteRollout(ctx, id, r.Wave)
			return nil, 0, err
		}
		if r.Wave > 0 && r.WaveSettledAt != nil {
			if left := time.Until(r.WaveSettledAt.Add(r.Pause)); left > 0 {
				return r, left, nil
			}
		}
		_, err := d.db.BeginWave(ctx, id, r.Wave)
		return nil, 0, err
	case store.PhaseDeploying:
		if err := d.deployWave(ctx, r); err != nil {
			if errors.Is(err, store.ErrWaveMoved) {
				return nil, 0, nil // read again: another step, a pause, or the deploy already done
			}
			var se *store.Error
			if errors.As(err, &se) && !errors.Is(err, store.ErrUnavailable) {
				// The deploy is refused as it stands (a gateway deleted, the
				// revision gone): no wave can go on.
				return nil, 0, d.db.HaltRollout(ctx, id, fmt.Sprintf("wave %d could not be deployed: %v", r.Wave, err))
			}
			return nil, 0, err
		}
		_, err := d.db.WaveDeployed(ctx, id, r.Wave)
		return nil, 0, err
	default:
		wait, err := d.settle(ctx, r)
		return r, wait, err
	}
}

// deployWave deploys the current wave to those of its gateways it has not
// reached yet (all of them, unless a driver stopped midway).
func (d *Driver) deployWave(ctx context.Context, r *store.Rollout) error {
	groups := map[string][]store.DeployTarget{} // revision -> targets
	var order []string
	var undeploy []string
	for _, t := range r.Targets {
		if t.Wave != r.Wave {
			continue
		}
		if t.RevisionID == "" {
			if t.Live != nil && t.Live.State == store.StateDeployed {
				undeploy = append(undeploy, t.GatewayID)
			}
			continue
		}
		if t.Live != nil && (t.PreviousDeploymentID == "" || t.Live.DeploymentID != t.PreviousDeploymentID) {
			continue // deployed before this driver stopped
		}
		if _, ok := groups[t.RevisionID]; !ok {
			order = append(order, t.RevisionID)
		}
		groups[t.RevisionID] = append(groups[t.RevisionID], store.DeployTarget{GatewayID: t.GatewayID, Vhost: t.Vhost,
			DisplayOnDevportal: t.DisplayOnDevportal})
	}
	for _, rev := range order {
		targets := groups[rev]
		ids := make([]string, len(targets))
		for i, t := range targets {
			ids[i] = t.GatewayID
		}
		check := func(*store.Revision) error { return d.db.CheckWavePending(ctx, r.ID, r.Wave, ids) }
		if _, err := d.fleet.Deploy(ctx, r.OrganizationID, r.APIID, rev, targets, check, 0); err != nil {
			return err
		}
	}
	for _, gw := range undeploy {
		if err := d.fleet.Undeploy(ctx, r.OrganizationID, r.APIID, gw); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// settle looks at the current wave's gateways: it records those that
// settled, halts the rollout once more than maxFailures failed in all, and
// ends the wave (or the rollout, after the last) once all have settled.
func (d *Driver) settle(ctx context.Context, r *store.Rollout) (time.Duration, error) {
	now := time.Now()
	deadline := now
	if r.WaveDeployedAt != nil {
		deadline = r.WaveDeployedAt.Add(r.WaveTimeout)
	}
	timedOut := !now.Before(deadline)
	failures, pending := r.PriorFailures, 0
	fetching := false
	var outcomes []store.Outcome
	for _, t := range r.Targets {
		if t.Wave != r.Wave {
			continue
		}
		if t.Outcome != "" {
			if t.Outcome == store.StatusFailed {
				failures++
			}
			continue
		}
		o, code := Classify(t)
		if o == "" {
			if !timedOut {
				pending++
				fetching = fetching || (t.Live != nil && t.Live.Status == store.StatusDelivered)
				continue
			}
			o, code = store.StatusFailed, CodeWaveTimeout
		}
		if o == store.StatusFailed {
			failures++
		}
		outcomes = append(outcomes, store.Outcome{GatewayID: t.GatewayID, Outcome: o, ErrorCode: code})
	}
	switch {
	case failures > r.MaxFailures:
		noun := "gateways"
		if failures == 1 {
			noun = "gateway"
		}
		reason := fmt.Sprintf("%d %s failed by wave %d of %d, more than maxFailures (%d)", failures, noun, r.Wave, len(r.Waves), r.MaxFailures)
		_, err := d.db.SettleWave(ctx, r.ID, r.Wave, outcomes, pending == 0, store.RolloutHalted, reason)
		return 0, err
	case pending == 0:
		status := ""
		if r.Wave == len(r.Waves) {
			status = store.RolloutCompleted
		}
		_, err := d.db.SettleWave(ctx, r.ID, r.Wave, outcomes, true, status, "")
		return 0, err
	}
	// Outcomes are written when the wave settles or the rollout halts,
	// not as each gateway settles: one write per wave, not one per wake.
	wait := min(d.poll, time.Until(deadline))
	if fetching {
		wait = min(wait, FetchPoll)
	}
	return max(wait, time.Millisecond), nil
}

// Classify says how a gateway of a deployed wave stands: "" while it has
// not settled, else DEPLOYED (second generation, acknowledged), DELIVERED
// (first generation: delivered and downloaded), UNDEPLOYED (a rollback's
// undeploy, done) or FAILED with an error code.
func Classify(t *store.RolloutTarget) (outcome, code string) {
	l := t.Live
	if t.RevisionID == "" { // undeploy
		if l == nil || l.State == store.StateUndeployed && l.Status == store.StatusUndeployed {
			return store.StatusUndeployed, ""
		}
		return "", ""
	}
	switch {
	case l == nil:
		return store.StatusFailed, CodeGone
	case t.DeploymentID != "" && l.DeploymentID != t.DeploymentID, l.State != store.StateDeployed:
		return store.StatusFailed, CodeReplaced
	case l.Status == store.StatusDeployed:
		return store.StatusDeployed, ""
	case l.Status == store.StatusFailed:
		return store.StatusFailed, l.ErrorCode
	case l.Status == store.StatusDelivered && l.FetchedAt != nil:
		return store.StatusDelivered, ""
	}
	return "", ""
}

// Wait waits until the rollout of the organization has ended or is paused,
// or the wait has passed, and returns it as it is then.
func (d *Driver) Wait(ctx context.Context, orgID, id string, wait time.Duration) (*store.Rollout, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		changed := d.Changed(id)
		r, err := d.db.GetRollout(context.WithoutCancel(ctx), orgID, id)
		if err != nil || r.Status != store.RolloutRunning {
			return r, err
		}
		t := time.NewTimer(d.poll / 4) // another replica may drive it
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return r, nil
		}
		t.Stop()
	}
}
