package store

// Progressive rollouts (package rollout drives them). A rollout is stored
// with its gateways, each in one wave, and where it stands: the wave being
// worked and its phase. Every step the driver takes is a conditional
// update naming the wave it starts from, the status RUNNING and the
// replica holding the lease, so that a step is taken once, by one replica,
// and a restarted or replacing driver resumes from what is stored.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Rollout statuses.
const (
	RolloutRunning    = "RUNNING"
	RolloutPaused     = "PAUSED"
	RolloutHalted     = "HALTED"
	RolloutCompleted  = "COMPLETED"
	RolloutAborted    = "ABORTED"
	RolloutRolledBack = "ROLLED_BACK"
)

// Rollout kinds.
const (
	KindRollout  = "ROLLOUT"
	KindRollback = "ROLLBACK"
)

// Wave phases.
const (
	PhaseDeploying = "deploying" // begun: the wave's deploy may or may not have committed
	PhaseDeployed  = "deployed"  // deployed, waiting for its gateways to settle
	PhaseSettled   = "settled"
)

// Rollout is a progressive deployment of an API to gateways, wave by wave.
type Rollout struct {
	ID             string
	OrganizationID string
	APIID          string
	Kind           string
	RollbackOf     string
	RevisionID     string // "" for a rollback (each target has its own)
	Status         string
	Reason         string
	Waves          []int // cumulative percentages, one per wave
	WaveTimeout    time.Duration
	Pause          time.Duration
	MaxFailures    int
	Wave           int // the wave being worked, 1-based; 0 before the first
	Phase          string
	WaveStartedAt  *time.Time
	WaveDeployedAt *time.Time
	WaveSettledAt  *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     *time.Time
	LeaseOwner     string
	Targets        []*RolloutTarget // in request order; nil in lists
	Counts         []WaveCount      // in lists (instead of Targets)
	PriorFailures  int              // read by the driver: failures of the other waves
}

// WaveCount is the size of a wave and how many of its gateways failed.
type WaveCount struct{ Wave, Size, Failed int }

// RolloutTarget is one gateway of a rollout.
type RolloutTarget struct {
	GatewayID          string
	Wave               int
	Vhost              string
	DisplayOnDevportal bool
	// RevisionID is what the wave deploys to it; "" undeploys (rollback).
	RevisionID string
	// What it ran when its wave began; HadPrevious is false when it ran
	// nothing.
	PreviousRevisionID   string
	PreviousVhost        string
	PreviousDeploymentID string
	HadPrevious          bool
	Captured             bool // its wave began: Previous* are set
	DeploymentID         string
	Outcome              string // "" until settled: DEPLOYED, DELIVERED, UNDEPLOYED or FAILED
	ErrorCode            string
	SentAt               *time.Time
	SettledAt            *time.Time
	// The gateway's current deployment of the API (nil: none).
	Live *Deployment
}

// Terminal reports whether a rollout status is final (the driver leaves it).
func Terminal(status string) bool {
	return status != RolloutRunning && status != RolloutPaused
}

// WaveSizes returns the cumulative number of gateways in each wave of
// percents over n targets: rounded up, at least one in the first.
func WaveSizes(n int, percents []int) []int {
	out := make([]int, len(percents))
	for i, p := range percents {
		out[i] = (n*p + 99) / 100
		if i == 0 && out[i] == 0 && n > 0 {
			out[i] = 1
		}
	}
	return out
}

// ErrWaveMoved is returned by CheckWavePending when the wave's targets were
// deployed meanwhile or the rollout is no longer this replica's to drive.
var ErrWaveMoved = errors.New("the rollout moved on: read it again")

// CreateRollout records a rollout, RUNNING and leased to this replica. It
// takes the API's row lock, so it is serialized with deploys of the API:
// another RUNNING or PAUSED rollout of the API is a conflict naming it. With
// no r.RevisionID a new revision of the current definition is made (check
// may refuse it, as for a deploy). Every target must be a gateway of the
// organization (ErrInvalid naming gatewayIds[i]); an empty vhost is the
// gateway's. Waves that would hold no gateway are dropped.
func (db *DB) CreateRollout(ctx context.Context, r *Rollout, check func(*Revision) error) (*Rollout, error) {
	var out *Rollout
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "apis", r.APIID); err != nil {
			return err
		}
		list, err := queryAPIs(ctx, tx, `WHERE id = $1 AND organization_id = $2`, r.APIID, r.OrganizationID)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("API %s not found", r.APIID)
		}
		if id, err := activeRollout(ctx, tx, r.APIID); err != nil {
			return err
		} else if id != "" {
			return conflict("rollout %s of API %s is still running or paused: pause, abort or roll it back first", id, r.APIID)
		}
		var rev *Revision
		if r.RevisionID == "" {
			rev, err = insertRevision(ctx, tx, list[0], now)
		} else {
			rev, err = findRevision(ctx, tx, r.APIID, r.RevisionID)
		}
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(rev); err != nil {
				return err
			}
		}
		ids := make([]string, len(r.Targets))
		for i, t := range r.Targets {
			ids[i] = t.GatewayID
		}
		vhosts, err := gatewayVhosts(ctx, tx, r.OrganizationID, ids)
		if err != nil {
			return err
		}
		for i, t := range r.Targets {
			vhost, ok := vhosts[t.GatewayID]
			if !ok {
				return invalid("gatewayIds[%d]: gateway %s not found in this organization", i, t.GatewayID)
			}
			if t.Vhost == "" {
				t.Vhost = vhost
			}
			t.RevisionID = rev.ID
		}
		c := *r
		c.ID, c.Kind, c.RevisionID, c.Status = newID(), KindRollout, rev.ID, RolloutRunning
		c.CreatedAt, c.UpdatedAt = now, now
		if err := insertRollout(ctx, tx, &c, db.replica, now.Add(db.lease)); err != nil {
			return err
		}
		out = &c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// insertRollout inserts r with its targets, assigning each its wave; waves
// that hold no gateway are dropped from r.Waves. A rollout with no target
// is COMPLETED at once.
func insertRollout(ctx context.Context, tx *Tx, r *Rollout, owner string, leaseUntil time.Time) error {
	sizes := WaveSizes(len(r.Targets), r.Waves)
	var waves []int
	prev := 0
	wave := 0
	for i, size := range sizes {
		if size <= prev {
			continue
		}
		waves = append(waves, r.Waves[i])
		wave++
		for j := prev; j < size; j++ {
			r.Targets[j].Wave = wave
		}
		prev = size
	}
	r.Waves = waves
	if len(r.Targets) == 0 {
		r.Waves = []int{}
		r.Status = RolloutCompleted
		r.FinishedAt = &r.CreatedAt
	}
	r.Phase = PhaseSettled
	r.LeaseOwner = owner
	wj, _ := json.Marshal(r.Waves)
	var finished any
	if r.FinishedAt != nil {
		finished = formatTime(*r.FinishedAt)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO rollouts (id, organization_id, api_id, kind, rollback_of, revision_id,
		status, waves, wave_timeout_ms, pause_ms, max_failures, wave, phase, created_at, updated_at, finished_at,
		lease_owner, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $13, $14, $15, $16)`,
		r.ID, r.OrganizationID, r.APIID, r.Kind, nullString(r.RollbackOf), nullString(r.RevisionID), r.Status, string(wj),
		r.WaveTimeout.Milliseconds(), r.Pause.Milliseconds(), r.MaxFailures, r.Phase, formatTime(r.CreatedAt), finished,
		owner, formatTime(leaseUntil))
	if err != nil {
		if constraintOf(err) == uniqueViolation {
			return conflict("another rollout of API %s is still running or paused", r.APIID)
		}
		return fmt.Errorf("insert rollout: %w", err)
	}
	for start := 0; start < len(r.Targets); start += targetsChunk {
		chunk := r.Targets[start:min(start+targetsChunk, len(r.Targets))]
		args := []any{r.ID}
		var values strings.Builder
		for i, t := range chunk {
			if i > 0 {
				values.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&values, "($1, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6)
			args = append(args, start+i, t.GatewayID, t.Wave, t.Vhost, t.DisplayOnDevportal, nullString(t.RevisionID))
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollout_targets (rollout_id, position, gateway_id, wave, vhost,
			display_on_devportal, revision_id) VALUES `+values.String(), args...); err != nil {
			return fmt.Errorf("insert rollout targets: %w", err)
		}
	}
	return nil
}

// targetsChunk is how many target rows one INSERT carries (7 bound
// parameters each, well under the limits of SQLite and PostgreSQL).
const targetsChunk = 200

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// activeRollout returns the id of the API's RUNNING or PAUSED rollout, or "".
func activeRollout(ctx context.Context, q queryer, apiID string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM rollouts WHERE api_id = $1 AND status IN ($2, $3)`,
		apiID, RolloutRunning, RolloutPaused).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// ActiveRollout returns the id of the API's RUNNING or PAUSED rollout, or
// "" when none is: a plain deploy of the API is refused while one is.
func (db *DB) ActiveRollout(ctx context.Context, apiID string) (string, error) {
	var id string
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		id, err = activeRollout(ctx, tx, apiID)
		return err
	})
	return id, err
}

const rolloutColumns = `id, organization_id, api_id, kind, rollback_of, revision_id, status, reason, waves,
	wave_timeout_ms, pause_ms, max_failures, wave, phase, wave_started_at, wave_deployed_at, wave_settled_at,
	created_at, updated_at, finished_at, lease_owner`

func scanRollout(row rowScanner) (*Rollout, error) {
	var r Rollout
	var rollbackOf, rev, reason, owner sql.NullString
	var waves string
	var timeout, pause int64
	if err := row.Scan(&r.ID, &r.OrganizationID, &r.APIID, &r.Kind, &rollbackOf, &rev, &r.Status, &reason, &waves,
		&timeout, &pause, &r.MaxFailures, &r.Wave, &r.Phase, dbTimePtr{&r.WaveStartedAt}, dbTimePtr{&r.WaveDeployedAt},
		dbTimePtr{&r.WaveSettledAt}, dbTime{&r.CreatedAt}, dbTime{&r.UpdatedAt}, dbTimePtr{&r.FinishedAt}, &owner); err != nil {
		return nil, err
	}
	r.RollbackOf, r.RevisionID, r.Reason, r.LeaseOwner = rollbackOf.String, rev.String, reason.String, owner.String
	r.WaveTimeout, r.Pause = time.Duration(timeout)*time.Millisecond, time.Duration(pause)*time.Millisecond
	if err := json.Unmarshal([]byte(waves), &r.Waves); err != nil {
		return nil, fmt.Errorf("rollout %s waves: %w", r.ID, err)
	}
	return &r, nil
}

// findRollout reads a rollout with its targets and their gateways' live
// deployments of the API. orgID "" reads any organization's (the driver).
func findRollout(ctx context.Context, tx *Tx, orgID, id string) (*Rollout, error) {
	return findRolloutWave(ctx, tx, orgID, id, false)
}

// findRolloutWave is findRollout; with currentOnly, only the targets of
// the current wave are read, and the failures of the others counted
// (PriorFailures): what the driver needs, at a cost that does not grow with
// the waves behind it.
func findRolloutWave(ctx context.Context, tx *Tx, orgID, id string, currentOnly bool) (*Rollout, error) {
	q, args := `SELECT `+rolloutColumns+` FROM rollouts WHERE id = $1`, []any{id}
	if orgID != "" {
		q, args = q+` AND organization_id = $2`, append(args, orgID)
	}
	r, err := scanRollout(tx.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("rollout %s not found", id)
	}
	if err != nil {
		return nil, err
	}
	cond, args := "", []any{id, r.APIID}
	if currentOnly {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM rollout_targets WHERE rollout_id = $1 AND wave <> $2
			AND outcome = 'FAILED'`, id, r.Wave).Scan(&r.PriorFailures); err != nil {
			return nil, err
		}
		cond, args = " AND t.wave = $3", append(args, r.Wave)
	}
	rows, err := tx.QueryContext(ctx, `SELECT t.gateway_id, t.wave, t.vhost, t.display_on_devportal, t.revision_id,
		t.previous_revision_id, t.previous_vhost, t.previous_deployment_id, t.sent_at, t.deployment_id, t.outcome,
		t.error_code, t.settled_at,
		d.deployment_id, d.revision_id, d.state, d.status, d.error_code, d.fetched_at
		FROM rollout_targets t LEFT JOIN deployments d ON d.api_id = $2 AND d.gateway_id = t.gateway_id
		WHERE t.rollout_id = $1`+cond+` ORDER BY t.position`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	r.Targets = []*RolloutTarget{}
	for rows.Next() {
		var t RolloutTarget
		var rev, prevRev, prevVhost, prevDep, dep, outcome, code sql.NullString
		var dDep, dRev, dState, dStatus, dCode sql.NullString
		var fetched *time.Time
		if err := rows.Scan(&t.GatewayID, &t.Wave, &t.Vhost, &t.DisplayOnDevportal, &rev, &prevRev, &prevVhost, &prevDep,
			dbTimePtr{&t.SentAt}, &dep, &outcome, &code, dbTimePtr{&t.SettledAt},
			&dDep, &dRev, &dState, &dStatus, &dCode, dbTimePtr{&fetched}); err != nil {
			return nil, err
		}
		t.RevisionID, t.PreviousRevisionID, t.PreviousVhost = rev.String, prevRev.String, prevVhost.String
		t.PreviousDeploymentID, t.DeploymentID, t.Outcome, t.ErrorCode = prevDep.String, dep.String, outcome.String, code.String
		t.Captured = t.SentAt != nil
		t.HadPrevious = prevRev.Valid
		if dDep.Valid {
			t.Live = &Deployment{APIID: r.APIID, GatewayID: t.GatewayID, DeploymentID: dDep.String, RevisionID: dRev.String,
				State: dState.String, Status: dStatus.String, ErrorCode: dCode.String, FetchedAt: fetched}
		}
		r.Targets = append(r.Targets, &t)
	}
	return r, rows.Err()
}

// GetRollout returns a rollout of the organization with its targets
// (ErrNotFound for another organization's).
func (db *DB) GetRollout(ctx context.Context, orgID, id string) (*Rollout, error) {
	// Pending fetch times first: a first-generation gateway's download is
	// part of what its status shows.
	if err := db.flushFetched(ctx); err != nil {
		return nil, err
	}
	var r *Rollout
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		r, err = findRollout(ctx, tx, orgID, id)
		return err
	})
	return r, err
}

// DriveRollout reads a rollout for the driver, whatever its organization,
// with the targets of its current wave only and the failures of the others
// counted (PriorFailures).
func (db *DB) DriveRollout(ctx context.Context, id string) (*Rollout, error) {
	// Downloads noted here and not yet written first: a first-generation
	// gateway's wave settles on them.
	if err := db.flushFetched(ctx); err != nil {
		return nil, err
	}
	var r *Rollout
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		r, err = findRolloutWave(ctx, tx, "", id, true)
		return err
	})
	return r, err
}

// Rollouts lists an API's rollouts, newest first, without their targets.
func (db *DB) Rollouts(ctx context.Context, orgID, apiID string, page Page) ([]*Rollout, int, error) {
	list := []*Rollout{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM rollouts WHERE api_id = $1`, apiID).Scan(&total); err != nil {
			return err
		}
		var err error
		list, err = collect(scanRollout)(tx.QueryContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE api_id = $1
			ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`, apiID, page.Limit, page.Offset))
		if err != nil || len(list) == 0 {
			return err
		}
		byID := map[string]*Rollout{}
		ids := make([]string, len(list))
		for i, r := range list {
			byID[r.ID], ids[i] = r, r.ID
		}
		return inChunks(ctx, tx, ids, nil, func(in string) string {
			return `SELECT rollout_id, wave, COUNT(*), SUM(CASE WHEN outcome = 'FAILED' THEN 1 ELSE 0 END)
				FROM rollout_targets WHERE rollout_id IN (` + in + `) GROUP BY rollout_id, wave`
		}, func(rows *sql.Rows) error {
			var id string
			var c WaveCount
			err := rows.Scan(&id, &c.Wave, &c.Size, &c.Failed)
			byID[id].Counts = append(byID[id].Counts, c)
			return err
		})
	})
	return list, total, err
}

// RolloutLease is how long a replica's claim on the rollouts it drives
// lasts without renewal.
func (db *DB) RolloutLease() time.Duration { return db.lease }

// ClaimRollouts renews this replica's lease on the RUNNING rollouts it
// drives and takes those whose driver's lease expired (on SQLite, one
// process: every RUNNING one). It returns the ids it holds.
func (db *DB) ClaimRollouts(ctx context.Context) ([]string, error) {
	var ids []string
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		cond := `(lease_owner = $3 OR lease_owner IS NULL OR lease_until < $2)`
		if !db.Replicated() {
			cond = `$3 = $3`
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rollouts SET lease_owner = $3, lease_until = $1
			WHERE status = 'RUNNING' AND `+cond, formatTime(now.Add(db.lease)), formatTime(now), db.replica); err != nil {
			return err
		}
		var err error
		ids, err = queryStrings(ctx, tx, `SELECT id FROM rollouts WHERE status = 'RUNNING' AND lease_owner = $1`, db.replica)
		return err
	})
	return ids, err
}

// ReleaseRollouts gives up this replica's leases (at shutdown), so another
// replica takes its rollouts over at once.
func (db *DB) ReleaseRollouts(ctx context.Context) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `UPDATE rollouts SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1`, db.replica)
		return err
	})
}

// driving is the condition of every step of the driver: the rollout is
// RUNNING and this replica holds it.
const driving = `status = 'RUNNING' AND lease_owner = `

// BeginWave starts wave from+1 of a RUNNING rollout held by this replica
// whose wave from is settled: it records, for each gateway of the new wave,
// what it runs now (its previous revision and deployment). It reports
// false when the rollout moved meanwhile (another step, a pause, another
// driver).
func (db *DB) BeginWave(ctx context.Context, id string, from int) (bool, error) {
	ok := false
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET wave = $1, phase = $2, wave_started_at = $3,
			wave_deployed_at = NULL, wave_settled_at = NULL, updated_at = $3
			WHERE id = $4 AND wave = $5 AND phase = $6 AND `+driving+`$7`,
			from+1, PhaseDeploying, formatTime(now), id, from, PhaseSettled, db.replica)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		ok = true
		_, err = tx.ExecContext(ctx, `UPDATE rollout_targets SET sent_at = $1,
			previous_deployment_id = (SELECT d.deployment_id FROM deployments d, rollouts r
				WHERE r.id = rollout_targets.rollout_id AND d.api_id = r.api_id AND d.gateway_id = rollout_targets.gateway_id),
			previous_revision_id = (SELECT d.revision_id FROM deployments d, rollouts r
				WHERE r.id = rollout_targets.rollout_id AND d.api_id = r.api_id AND d.gateway_id = rollout_targets.gateway_id
				AND d.state = 'deployed'),
			previous_vhost = (SELECT d.vhost FROM deployments d, rollouts r
				WHERE r.id = rollout_targets.rollout_id AND d.api_id = r.api_id AND d.gateway_id = rollout_targets.gateway_id
				AND d.state = 'deployed')
			WHERE rollout_id = $2 AND wave = $3`, formatTime(now), id, from+1)
		return err
	})
	return ok, err
}

// CheckWavePending is called inside the transaction of a wave's deploy
// (after the API's row lock, which serializes it with every other deploy of
// the API): it answers ErrWaveMoved unless this replica still drives the
// rollout at that wave and none of the gateways was deployed since the
// wave began. So a wave's deploy commits once, whoever tries it.
func (db *DB) CheckWavePending(ctx context.Context, id string, wave int, gatewayIDs []string) error {
	return db.readTx(ctx, func(tx *Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM rollouts WHERE id = $1 AND wave = $2 AND phase = $3
			AND `+driving+`$4`, id, wave, PhaseDeploying, db.replica).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrWaveMoved
		}
		moved := 0
		err := inChunks(ctx, tx, gatewayIDs, []any{id}, func(in string) string {
			return `SELECT COUNT(*) FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id
				JOIN deployments d ON d.api_id = r.api_id AND d.gateway_id = t.gateway_id
				WHERE t.rollout_id = $1 AND t.gateway_id IN (` + in + `)
				AND (t.previous_deployment_id IS NULL OR d.deployment_id <> t.previous_deployment_id)`
		}, func(rows *sql.Rows) error {
			var c int
			err := rows.Scan(&c)
			moved += c
			return err
		})
		if err != nil {
			return err
		}
		if moved > 0 {
			return ErrWaveMoved
		}
		return nil
	})
}

// WaveDeployed records that the current wave's deploy is done: each of its
// gateways' deployment id is noted (what its status is read from).
func (db *DB) WaveDeployed(ctx context.Context, id string, wave int) (bool, error) {
	ok := false
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET phase = $1, wave_deployed_at = $2, updated_at = $2
			WHERE id = $3 AND wave = $4 AND phase = $5 AND `+driving+`$6`,
			PhaseDeployed, formatTime(now), id, wave, PhaseDeploying, db.replica)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		ok = true
		_, err = tx.ExecContext(ctx, `UPDATE rollout_targets SET deployment_id = (SELECT d.deployment_id
			FROM deployments d, rollouts r WHERE r.id = rollout_targets.rollout_id AND d.api_id = r.api_id
			AND d.gateway_id = rollout_targets.gateway_id) WHERE rollout_id = $1 AND wave = $2`, id, wave)
		return err
	})
	return ok, err
}

// Outcome is how one gateway of a wave ended.
type Outcome struct {
	GatewayID string
	Outcome   string
	ErrorCode string
}

// SettleWave records outcomes of the current wave's gateways and, with
// status, where the rollout goes: "" keeps it RUNNING (settled says whether
// the wave is done), HALTED or COMPLETED end it (with reason).
func (db *DB) SettleWave(ctx context.Context, id string, wave int, outcomes []Outcome, settled bool, status, reason string) (bool, error) {
	ok := false
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		set, args := `updated_at = $1`, []any{formatTime(now), id, wave, PhaseDeployed, db.replica}
		if settled {
			set += `, phase = 'settled', wave_settled_at = $1`
		}
		if status != "" {
			set += `, status = $6, reason = $7, finished_at = $1, lease_owner = NULL, lease_until = NULL`
			args = append(args, status, nullString(reason))
		}
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET `+set+` WHERE id = $2 AND wave = $3 AND phase = $4
			AND `+driving+`$5`, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		ok = true
		// One statement per outcome and code (most gateways share one),
		// in chunks of gateways.
		type key struct{ outcome, code string }
		groups := map[key][]string{}
		var order []key
		for _, o := range outcomes {
			k := key{o.Outcome, o.ErrorCode}
			if _, ok := groups[k]; !ok {
				order = append(order, k)
			}
			groups[k] = append(groups[k], o.GatewayID)
		}
		for _, k := range order {
			ids := groups[k]
			for start := 0; start < len(ids); start += inChunk {
				chunk := ids[start:min(start+inChunk, len(ids))]
				args := []any{k.outcome, nullString(k.code), formatTime(now), id}
				for _, g := range chunk {
					args = append(args, g)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE rollout_targets SET outcome = $1, error_code = $2, settled_at = $3
					WHERE rollout_id = $4 AND outcome IS NULL AND gateway_id IN (`+placeholders(5, len(chunk))+`)`, args...); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return ok, err
}

// CompleteRollout marks a RUNNING rollout held here whose last wave has
// settled COMPLETED.
func (db *DB) CompleteRollout(ctx context.Context, id string, wave int) (bool, error) {
	ok := false
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET status = $1, finished_at = $2, updated_at = $2,
			lease_owner = NULL, lease_until = NULL WHERE id = $3 AND wave = $4 AND phase = 'settled' AND `+driving+`$5`,
			RolloutCompleted, formatTime(now), id, wave, db.replica)
		if err == nil {
			n, _ := res.RowsAffected()
			ok = n > 0
		}
		return err
	})
	return ok, err
}

// HaltRollout ends a RUNNING rollout held here with reason (a deploy it
// cannot make).
func (db *DB) HaltRollout(ctx context.Context, id, reason string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `UPDATE rollouts SET status = $1, reason = $2, finished_at = $3, updated_at = $3,
			lease_owner = NULL, lease_until = NULL WHERE id = $4 AND `+driving+`$5`,
			RolloutHalted, reason, formatTime(now), id, db.replica)
		return err
	})
}

// Rollout actions.
const (
	ActionPause  = "pause"
	ActionResume = "resume"
	ActionAbort  = "abort"
)

// ControlRollout pauses, resumes or aborts a rollout of the organization.
// Pause takes a RUNNING one (no further wave starts; the current wave's
// deployments go on), resume a PAUSED one, abort a RUNNING, PAUSED or
// HALTED one; any other status is a conflict saying so. Resume leases the
// rollout to this replica.
func (db *DB) ControlRollout(ctx context.Context, orgID, id, action string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var status string
		err := tx.QueryRowContext(ctx, `SELECT status FROM rollouts WHERE id = $1 AND organization_id = $2`+tx.forUpdate(),
			id, orgID).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("rollout %s not found", id)
		}
		if err != nil {
			return err
		}
		var to string
		var from []string
		switch action {
		case ActionPause:
			to, from = RolloutPaused, []string{RolloutRunning}
		case ActionResume:
			to, from = RolloutRunning, []string{RolloutPaused}
		case ActionAbort:
			to, from = RolloutAborted, []string{RolloutRunning, RolloutPaused, RolloutHalted}
		default:
			return invalid("unknown action %q", action)
		}
		ok := false
		for _, f := range from {
			ok = ok || f == status
		}
		if !ok {
			return conflict("rollout %s is %s: %s takes a rollout that is %s", id, status, action, strings.Join(from, " or "))
		}
		var finished any
		if to == RolloutAborted {
			finished = formatTime(now)
		}
		_, err = tx.ExecContext(ctx, `UPDATE rollouts SET status = $1, updated_at = $2, finished_at = $3,
			lease_owner = $4, lease_until = $5 WHERE id = $6`,
			to, formatTime(now), finished, db.replica, formatTime(now.Add(db.lease)), id)
		return err
	})
}

// Rollback ends a rollout of the organization as ROLLED_BACK and records,
// as a rollout of its own (one wave, RUNNING), the redeploy of what each
// gateway it reached ran before it: its previous revision, or an undeploy
// where it ran none. A rollback cannot itself be rolled back, nor a rollout
// twice; another rollout of the API running is a conflict.
func (db *DB) Rollback(ctx context.Context, orgID, id string) (*Rollout, error) {
	var out *Rollout
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var apiID string
		if err := tx.QueryRowContext(ctx, `SELECT api_id FROM rollouts WHERE id = $1 AND organization_id = $2`,
			id, orgID).Scan(&apiID); errors.Is(err, sql.ErrNoRows) {
			return notFound("rollout %s not found", id)
		} else if err != nil {
			return err
		}
		if err := tx.lockRow(ctx, "apis", apiID); err != nil {
			return err
		}
		r, err := findRollout(ctx, tx, orgID, id)
		if err != nil {
			return err
		}
		switch {
		case r.Kind == KindRollback:
			return conflict("rollout %s is itself a rollback: start a new rollout instead", id)
		case r.Status == RolloutRolledBack:
			return conflict("rollout %s is already rolled back", id)
		}
		if other, err := activeRollout(ctx, tx, apiID); err != nil {
			return err
		} else if other != "" && other != id {
			return conflict("rollout %s of API %s is still running or paused: pause, abort or roll it back first", other, apiID)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rollouts SET status = $1, finished_at = $2, updated_at = $2,
			lease_owner = NULL, lease_until = NULL WHERE id = $3`, RolloutRolledBack, formatTime(now), id); err != nil {
			return err
		}
		b := &Rollout{ID: newID(), OrganizationID: orgID, APIID: apiID, Kind: KindRollback, RollbackOf: id,
			Status: RolloutRunning, Waves: []int{100}, WaveTimeout: r.WaveTimeout, MaxFailures: r.MaxFailures,
			CreatedAt: now, UpdatedAt: now}
		for _, t := range r.Targets {
			if !t.Captured {
				continue // its wave never began: it runs what it ran
			}
			nt := &RolloutTarget{GatewayID: t.GatewayID, DisplayOnDevportal: t.DisplayOnDevportal}
			if t.HadPrevious {
				nt.RevisionID, nt.Vhost = t.PreviousRevisionID, t.PreviousVhost
			}
			b.Targets = append(b.Targets, nt)
		}
		if err := insertRollout(ctx, tx, b, db.replica, now.Add(db.lease)); err != nil {
			return err
		}
		out = b
		return nil
	})
	return out, err
}
