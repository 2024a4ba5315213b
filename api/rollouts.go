package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/store"
)

// rolloutRequest is the body of POST /api/v1/apis/{apiId}/rollouts.
type rolloutRequest struct {
	RevisionID  string   `json:"revisionId"`
	GatewayIDs  []string `json:"gatewayIds"`
	Waves       []int    `json:"waves"`
	WaveTimeout string   `json:"waveTimeout"`
	Pause       string   `json:"pause"`
	MaxFailures *int     `json:"maxFailures"`

	waveTimeout, pause time.Duration
}

// Bounds of a rollout's durations.
const (
	DefaultWaveTimeout = 60 * time.Second
	maxRolloutDuration = 24 * time.Hour
)

func (b *rolloutRequest) Validate(ctx context.Context) error {
	var e httpx.FieldErrors
	if b.RevisionID != "" && !httpx.IsID(b.RevisionID) {
		e.Add("revisionId", "must be a revision UUID (%s), or absent to deploy the API's current definition", httpx.IDDescription)
	}
	switch {
	case len(b.GatewayIDs) == 0:
		e.Add("gatewayIds", "is required: a non-empty array of gateway UUIDs")
	case len(b.GatewayIDs) > maxDeployItems:
		e.Add("gatewayIds", "at most %d gateways per rollout", maxDeployItems)
	}
	seen := map[string]int{}
	for i, id := range b.GatewayIDs {
		p := fmt.Sprintf("gatewayIds[%d]", i)
		if !httpx.IsID(id) {
			e.Add(p, "must be a gateway UUID (%s)", httpx.IDDescription)
		} else if j, dup := seen[id]; dup {
			e.Add(p, "gateway %s is already gatewayIds[%d]", id, j)
		} else {
			seen[id] = i
		}
	}
	if len(b.Waves) == 0 {
		e.Add("waves", "is required: cumulative percentages of the gateways, strictly increasing, from 1 to 100, the last 100 (such as [1, 10, 50, 100])")
	}
	for i, w := range b.Waves {
		p := fmt.Sprintf("waves[%d]", i)
		switch {
		case w < 1 || w > 100:
			e.Add(p, "must be a percentage from 1 to 100, not %d", w)
		case i > 0 && w <= b.Waves[i-1]:
			e.Add(p, "must be more than waves[%d] (%d): waves are cumulative and strictly increasing", i-1, b.Waves[i-1])
		}
	}
	if n := len(b.Waves); n > 0 && b.Waves[n-1] != 100 {
		e.Add(fmt.Sprintf("waves[%d]", n-1), "the last wave must be 100 (every gateway), not %d", b.Waves[n-1])
	}
	b.waveTimeout = DefaultWaveTimeout
	if b.WaveTimeout != "" {
		d, err := time.ParseDuration(b.WaveTimeout)
		if err != nil || d <= 0 || d > maxRolloutDuration {
			e.Add("waveTimeout", "must be a duration such as 60s, more than 0 and at most %s, not %q", maxRolloutDuration, b.WaveTimeout)
		}
		b.waveTimeout = d
	}
	if b.Pause != "" {
		d, err := time.ParseDuration(b.Pause)
		if err != nil || d < 0 || d > maxRolloutDuration {
			e.Add("pause", "must be a duration such as 0s or 5m, at most %s, not %q", maxRolloutDuration, b.Pause)
		}
		b.pause = d
	}
	if b.MaxFailures != nil && *b.MaxFailures < 0 {
		e.Add("maxFailures", "must be 0 or more, not %d", *b.MaxFailures)
	}
	return e.Err()
}

// Rollout is a rollout as the API answers it.
type Rollout struct {
	ID          string        `json:"id"`
	APIID       string        `json:"apiId"`
	Kind        string        `json:"kind"`
	RollbackOf  string        `json:"rollbackOf,omitempty"`
	RevisionID  string        `json:"revisionId,omitempty"`
	Status      string        `json:"status"`
	Reason      string        `json:"reason,omitempty"`
	WaveTimeout string        `json:"waveTimeout"`
	Pause       string        `json:"pause"`
	MaxFailures int           `json:"maxFailures"`
	CurrentWave int           `json:"currentWave"`
	Gateways    int           `json:"gateways"`
	Reached     int           `json:"reached"`
	Failed      int           `json:"failed"`
	Waves       []RolloutWave `json:"waves"`
	// Failures are the failed gateways (GET of one rollout; not in lists).
	Failures   *[]RolloutGwRef `json:"failures,omitempty"`
	CreatedAt  time.Time       `json:"createdAt"`
	UpdatedAt  time.Time       `json:"updatedAt"`
	FinishedAt *time.Time      `json:"finishedAt,omitempty"`
}

// RolloutWave is one wave of a rollout.
type RolloutWave struct {
	Number  int `json:"number"`
	Percent int `json:"percent"`
	// Size is the number of gateways the wave adds.
	Size int `json:"size"`
	// Status: WAITING (not begun), DEPLOYING (begun, deploy not done),
	// SETTLING (deployed, gateways not all settled), SETTLED.
	Status    string            `json:"status"`
	StartedAt *time.Time        `json:"startedAt,omitempty"`
	SettledAt *time.Time        `json:"settledAt,omitempty"`
	Gateways  []RolloutGwStatus `json:"gateways,omitempty"`
}

// RolloutGwStatus is one gateway of a wave and its deployment's status:
// WAITING before its wave is deployed, then the deployment's status, and
// once settled the outcome (DEPLOYED, DELIVERED and downloaded, UNDEPLOYED,
// or FAILED with errorCode).
type RolloutGwStatus struct {
	GatewayID          string `json:"gatewayId"`
	Status             string `json:"status"`
	ErrorCode          string `json:"errorCode,omitempty"`
	DeploymentID       string `json:"deploymentId,omitempty"`
	RevisionID         string `json:"revisionId,omitempty"`
	PreviousRevisionID string `json:"previousRevisionId,omitempty"`
}

// RolloutGwRef is a failed gateway of a rollout.
type RolloutGwRef struct {
	GatewayID string `json:"gatewayId"`
	Wave      int    `json:"wave"`
	ErrorCode string `json:"errorCode"`
}

// rolloutView is what the API answers for r; with its targets only when
// read with them.
func rolloutView(r *store.Rollout) *Rollout {
	v := &Rollout{ID: r.ID, APIID: r.APIID, Kind: r.Kind, RollbackOf: r.RollbackOf, RevisionID: r.RevisionID,
		Status: r.Status, Reason: r.Reason, WaveTimeout: r.WaveTimeout.String(), Pause: r.Pause.String(),
		MaxFailures: r.MaxFailures, CurrentWave: r.Wave, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		FinishedAt: r.FinishedAt, Waves: []RolloutWave{}}
	failures := []RolloutGwRef{}
	for i, p := range r.Waves {
		w := RolloutWave{Number: i + 1, Percent: p, Status: "WAITING"}
		switch {
		case i+1 < r.Wave || i+1 == r.Wave && r.Phase == store.PhaseSettled:
			w.Status = "SETTLED"
		case i+1 == r.Wave && r.Phase == store.PhaseDeploying:
			w.Status = "DEPLOYING"
		case i+1 == r.Wave:
			w.Status = "SETTLING"
		}
		v.Waves = append(v.Waves, w)
	}
	for _, t := range r.Targets {
		v.Gateways++
		if t.Wave < 1 || t.Wave > len(v.Waves) {
			continue
		}
		w := &v.Waves[t.Wave-1]
		w.Size++
		if t.Wave <= r.Wave {
			v.Reached++
		}
		if t.SentAt != nil {
			w.StartedAt = t.SentAt
		}
		if t.SettledAt != nil && w.Status == "SETTLED" && (w.SettledAt == nil || t.SettledAt.After(*w.SettledAt)) {
			w.SettledAt = t.SettledAt
		}
		g := RolloutGwStatus{GatewayID: t.GatewayID, Status: "WAITING", RevisionID: t.RevisionID,
			PreviousRevisionID: t.PreviousRevisionID}
		switch {
		case t.Outcome != "":
			g.Status, g.ErrorCode, g.DeploymentID = t.Outcome, t.ErrorCode, t.DeploymentID
		case t.Wave > r.Wave || t.Live == nil && t.RevisionID != "":
		case t.RevisionID == "" && t.Live == nil:
			g.Status = store.StatusUndeployed
		case t.RevisionID == "" || t.PreviousDeploymentID == "" || t.Live.DeploymentID != t.PreviousDeploymentID:
			g.Status, g.ErrorCode, g.DeploymentID = t.Live.Status, t.Live.ErrorCode, t.Live.DeploymentID
		}
		if g.Status == store.StatusFailed {
			v.Failed++
			failures = append(failures, RolloutGwRef{GatewayID: t.GatewayID, Wave: t.Wave, ErrorCode: g.ErrorCode})
		}
		w.Gateways = append(w.Gateways, g)
	}
	// A list reads no targets: the counts come with the rollout.
	for _, c := range r.Counts {
		if c.Wave >= 1 && c.Wave <= len(v.Waves) {
			v.Waves[c.Wave-1].Size = c.Size
			v.Gateways += c.Size
			v.Failed += c.Failed
			if c.Wave <= r.Wave {
				v.Reached += c.Size
			}
		}
	}
	if r.Targets != nil {
		v.Failures = &failures
	}
	return v
}

// rolloutID reads the {rolloutId} of the path: one not in canonical form
// names no rollout.
func rolloutID(r *http.Request) (string, error) {
	id := r.PathValue("rolloutId")
	if !httpx.IsID(id) {
		return "", httpx.Errorf(http.StatusNotFound, "rollout %s not found: %s", id, httpx.IDDescription)
	}
	return id, nil
}

// createRollout records a rollout and has this replica drive it: its first
// wave is deployed at once. With ?wait= it answers once the rollout has
// ended or is paused, or when the wait ends.
func (s *Server) createRollout(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var b rolloutRequest
	if err := httpx.Decode(w, r, s.maxBody, &b); err != nil {
		return err
	}
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	ro := &store.Rollout{OrganizationID: p.OrganizationID, APIID: r.PathValue("apiId"), RevisionID: b.RevisionID,
		Waves: b.Waves, WaveTimeout: b.waveTimeout, Pause: b.pause}
	if b.MaxFailures != nil {
		ro.MaxFailures = *b.MaxFailures
	}
	for _, id := range b.GatewayIDs {
		ro.Targets = append(ro.Targets, &store.RolloutTarget{GatewayID: id})
	}
	created, err := s.store.CreateRollout(r.Context(), ro, s.deployable)
	if err != nil {
		return err
	}
	return s.answerRollout(w, r, p, created.ID, wait, http.StatusCreated)
}

// answerRollout kicks the driver, waits as asked, and answers the rollout.
func (s *Server) answerRollout(w http.ResponseWriter, r *http.Request, p auth.Principal, id string, wait time.Duration, status int) error {
	s.rollouts.Drive(id)
	var got *store.Rollout
	var err error
	if wait > 0 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + answerWriteTime))
		got, err = s.rollouts.Wait(r.Context(), p.OrganizationID, id, wait)
	} else {
		got, err = s.store.GetRollout(r.Context(), p.OrganizationID, id)
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, status, rolloutView(got))
	return nil
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id, err := rolloutID(r)
	if err != nil {
		return err
	}
	got, err := s.store.GetRollout(r.Context(), p.OrganizationID, id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, rolloutView(got))
	return nil
}

// listRollouts lists an API's rollouts, newest first, without the gateways
// of each wave.
func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Rollouts(r.Context(), p.OrganizationID, r.PathValue("apiId"), store.Page(page))
	if err != nil {
		return err
	}
	out := make([]*Rollout, len(list))
	for i, ro := range list {
		out[i] = rolloutView(ro)
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(out, total, page))
	return nil
}

// controlRollout makes a handler of POST /api/v1/rollouts/{id}/pause,
// resume or abort; it answers 200 with the rollout.
func (s *Server) controlRollout(action string) userHandler {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		id, err := rolloutID(r)
		if err != nil {
			return err
		}
		if err := s.store.ControlRollout(r.Context(), p.OrganizationID, id, action); err != nil {
			return err
		}
		return s.answerRollout(w, r, p, id, 0, http.StatusOK)
	}
}

// rollbackRollout rolls a rollout back: 201 with the rollback, a rollout of
// its own (?wait= as for a create).
func (s *Server) rollbackRollout(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id, err := rolloutID(r)
	if err != nil {
		return err
	}
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	back, err := s.store.Rollback(r.Context(), p.OrganizationID, id)
	if err != nil {
		return err
	}
	return s.answerRollout(w, r, p, back.ID, wait, http.StatusCreated)
}

// noRollout refuses a plain deploy of an API while a rollout of it runs or
// is paused. It runs inside the deploy's transaction, after the API's row
// lock, which a rollout's creation takes too: the two cannot cross.
func (s *Server) noRollout(ctx context.Context, apiID string) error {
	id, err := s.store.ActiveRollout(ctx, apiID)
	if err != nil {
		return err
	}
	if id != "" {
		return httpx.Errorf(http.StatusConflict, "rollout %s of API %s is running or paused: pause and abort it, or wait for it to end, before deploying the API directly", id, apiID)
	}
	return nil
}
