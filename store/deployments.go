package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Revision is an immutable snapshot of an API definition.
type Revision struct {
	ID        string
	APIID     string
	Number    int
	API       *API // the definition as it was when the revision was made
	CreatedAt time.Time
}

// Deployment is the revision of an API that one gateway runs, or, once
// undeployed (State StateUndeployed), ran: a tombstone that stays until the
// gateway has acknowledged the undeployment or the retention time passes.
type Deployment struct {
	APIID              string `json:"-"`
	GatewayID          string `json:"gatewayId"`
	DeploymentID       string `json:"deploymentId"`
	RevisionID         string `json:"revisionId"`
	Vhost              string `json:"vhost"`
	DisplayOnDevportal bool   `json:"-"`
	State              string `json:"-"`
	Status             string `json:"status"`
	ErrorCode          string `json:"errorCode,omitempty"`
	// DeployedTime is when the deployment was made; PerformedAt when its
	// last action (the deploy, or the undeploy) was: what gateways are
	// told as performedAt.
	DeployedTime time.Time  `json:"deployedTime"`
	PerformedAt  time.Time  `json:"-"`
	DeliveredAt  *time.Time `json:"deliveredAt"`
	AckedAt      *time.Time `json:"ackedAt"`
	FetchedAt    *time.Time `json:"fetchedAt"`
}

// Deployment states.
const (
	StateDeployed   = "deployed"
	StateUndeployed = "undeployed"
)

// Deployment statuses. A first-generation gateway's deployment is PENDING
// until a live connection took it, then DELIVERED. A second-generation
// gateway acknowledges: DEPLOYING once sent, then DEPLOYED (every connection
// that took it applied it) or FAILED (one reported failure, or no
// acknowledgement came in time); an undeployment is UNDEPLOYING until
// acknowledged (or, for the first generation, delivered), then UNDEPLOYED.
const (
	StatusPending     = "PENDING"
	StatusDelivered   = "DELIVERED"
	StatusDeploying   = "DEPLOYING"
	StatusDeployed    = "DEPLOYED"
	StatusFailed      = "FAILED"
	StatusUndeploying = "UNDEPLOYING"
	StatusUndeployed  = "UNDEPLOYED"
)

// ErrorDeploymentTimeout is the error code of a deployment no gateway
// connection acknowledged in time.
const ErrorDeploymentTimeout = "DEPLOYMENT_TIMEOUT"

// DeletedDeployment is the tombstone of a deployment whose API was deleted.
type DeletedDeployment struct {
	APIID        string
	GatewayID    string
	DeploymentID string
	Vhost        string
	State        string // of the deployment when the API was deleted
	DeletedAt    time.Time
	DeliveredAt  *time.Time
}

// DeployTarget is one item of a deploy request.
type DeployTarget struct {
	GatewayID          string
	Vhost              string
	DisplayOnDevportal bool
}

// Deploy records, in one transaction, that each target gateway now runs a
// revision of the API: a new revision snapshotting the current definition
// when revisionID is empty, or the named earlier revision (rollback). check
// is called with the revision to deploy and may refuse it. Every target
// gateway must belong to the organization (ErrInvalid naming the item
// otherwise), so a bad item records nothing. Statuses start as PENDING. The
// change (ChangeDeployed, with one row per target) is published after the
// commit, and returned.
func (db *DB) Deploy(ctx context.Context, orgID, apiID, revisionID string, targets []DeployTarget, check func(*Revision) error) (*Revision, *Change, error) {
	var rev *Revision
	var change *Change
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var deps []*Deployment
		// Changes to one API take turns on its row (PostgreSQL; SQLite has
		// one writer): each deploy numbers its revision after the last
		// one, and an undeploy or a deletion reads the state it replaces.
		if err := tx.lockRow(ctx, "apis", apiID); err != nil {
			return err
		}
		now, err := nextStamp(ctx, tx, apiID, db.clock())
		if err != nil {
			return err
		}
		list, err := queryAPIs(ctx, tx, `WHERE id = $1 AND organization_id = $2`, apiID, orgID)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("API %s not found", apiID)
		}
		ids := make([]string, len(targets))
		for i, t := range targets {
			ids[i] = t.GatewayID
		}
		vhosts, err := gatewayVhosts(ctx, tx, orgID, ids)
		if err != nil {
			return err
		}
		for i, t := range targets {
			vhost, ok := vhosts[t.GatewayID]
			if !ok {
				return invalid("[%d].gatewayId: gateway %s not found in this organization", i, t.GatewayID)
			}
			if t.Vhost == "" {
				targets[i].Vhost = vhost
			}
		}
		if revisionID == "" {
			rev, err = insertRevision(ctx, tx, list[0], now)
		} else {
			rev, err = findRevision(ctx, tx, apiID, revisionID)
		}
		if err != nil {
			return err
		}
		if err := check(rev); err != nil {
			return err
		}
		// One statement for every target (rowSet), in key order (the
		// gateway's: one API), the order every writer of several rows
		// keeps. The revision, state, status and time are shared
		// parameters. Each target gets a new deployment id, which replaces
		// whatever the gateway ran (or had undeployed) before.
		for _, t := range targets {
			deps = append(deps, &Deployment{APIID: apiID, GatewayID: t.GatewayID, DeploymentID: newID(), RevisionID: rev.ID,
				Vhost: t.Vhost, DisplayOnDevportal: t.DisplayOnDevportal, State: StateDeployed, Status: StatusPending,
				DeployedTime: now, PerformedAt: now})
		}
		type row struct {
			G string `json:"g"`
			D string `json:"d"`
			V string `json:"v"`
			P string `json:"p"`
		}
		rows := make([]row, len(deps))
		for i, d := range deps {
			rows[i] = row{d.GatewayID, d.DeploymentID, d.Vhost, flag(d.DisplayOnDevportal)}
		}
		set, err := jsonRows(rows)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO deployments (api_id, gateway_id, deployment_id, revision_id, vhost,
			display_on_devportal, state, status, deployed_at, performed_at)
			SELECT CAST($1 AS TEXT), j.g, j.d, CAST($2 AS TEXT), j.v, j.p = '1', CAST($3 AS TEXT), CAST($4 AS TEXT),
			CAST($5 AS TEXT), CAST($5 AS TEXT) FROM `+tx.rowSet(6, "g", "d", "v", "p")+`
			WHERE true ORDER BY j.g
			ON CONFLICT (api_id, gateway_id) DO UPDATE SET deployment_id = excluded.deployment_id,
			revision_id = excluded.revision_id, vhost = excluded.vhost, display_on_devportal = excluded.display_on_devportal,
			state = excluded.state, status = excluded.status, error_code = NULL, deployed_at = excluded.deployed_at,
			performed_at = excluded.performed_at, resent_at = NULL, sent_at = NULL, delivered_at = NULL, acked_at = NULL,
			fetched_at = NULL`, apiID, rev.ID, StateDeployed, StatusPending, formatTime(now), set); err != nil {
			return fmt.Errorf("record deployments: %w", err)
		}
		change = tx.record(&Change{Kind: ChangeDeployed, Deployments: deps})
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	db.schedulePrune(apiID)
	return rev, change, nil
}

// The stamps of changes (performedAt). A second-generation gateway applies
// an event only when its performedAt is newer than what it holds, so for
// each (gateway, API) a later commit must carry a later stamp, whatever the
// clocks of the replicas and however transactions interleave, and the
// stamp a reconnecting gateway's initial state re-sends a deployment with
// (resent_at, see ResendState) must lie between the two.
//
// So a change's stamp is taken under the API's row lock, which every change
// to the API's deployments (Deploy, Undeploy, DeleteAPI) and every re-send
// holds: it is now, or just after the newest stamp of the API's rows,
// performed or re-sent, whichever is later. One stamp serves every row of
// the change (another replica reads the change back by it), and it is newer
// than every row of the API, so no earlier row is taken for the change's.

// stampStep is the smallest step between stamps: what the columns keep.
const stampStep = time.Microsecond

// nextStamp is the stamp of a change to the API's deployments made at now.
// The caller holds the API's row lock.
func nextStamp(ctx context.Context, tx *Tx, apiID string, now time.Time) (time.Time, error) {
	var performed, resent time.Time
	if err := tx.QueryRowContext(ctx, `SELECT MAX(performed_at), MAX(resent_at) FROM deployments WHERE api_id = $1`,
		apiID).Scan(dbTime{&performed}, dbTime{&resent}); err != nil {
		return time.Time{}, fmt.Errorf("read the API's last stamp: %w", err)
	}
	return after(now, performed, resent), nil
}

// after is now (to the column's precision), or the step after the latest of
// last, whichever is later.
func after(now time.Time, last ...time.Time) time.Time {
	stamp := now.UTC().Truncate(stampStep)
	for _, t := range last {
		if !t.IsZero() && !stamp.After(t) {
			stamp = t.UTC().Add(stampStep)
		}
	}
	return stamp
}

// inChunk is how many values one IN (...) list holds, well under SQLite's
// and PostgreSQL's limits on bound parameters.
const inChunk = 500

// queryStrings returns the first column of the rows of a query.
func queryStrings(ctx context.Context, tx *Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// inChunks runs a query for ids, inChunk of them at a time: query gets the
// placeholders of a chunk's ids, which are bound after args; scan is called
// with each row.
// idSet runs a query of one id column over a list of ids in chunks
// (inChunks) and returns the ids it answered.
func idSet(ctx context.Context, tx *Tx, ids []string, args []any, query func(in string) string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	err := inChunks(ctx, tx, ids, args, query, func(rows *sql.Rows) error {
		var id string
		err := rows.Scan(&id)
		out[id] = true
		return err
	})
	return out, err
}

func inChunks(ctx context.Context, tx *Tx, ids []string, args []any, query func(in string) string, scan func(*sql.Rows) error) error {
	for start := 0; start < len(ids); start += inChunk {
		chunk := ids[start:min(start+inChunk, len(ids))]
		a := slices.Clone(args)
		for _, id := range chunk {
			a = append(a, id)
		}
		rows, err := tx.QueryContext(ctx, query(placeholders(len(args)+1, len(chunk))), a...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// gatewayVhosts returns the vhost of each listed gateway of the
// organization, in one query whatever their number (rowSet).
func gatewayVhosts(ctx context.Context, tx *Tx, orgID string, ids []string) (map[string]string, error) {
	type row struct {
		G string `json:"g"`
	}
	set := make([]row, len(ids))
	for i, id := range ids {
		set[i].G = id
	}
	js, err := jsonRows(set)
	if err != nil {
		return nil, err
	}
	// The set first: SQLite joins in the order written with CROSS JOIN,
	// and would otherwise read the whole set for each of the
	// organization's gateways.
	rows, err := tx.QueryContext(ctx, `SELECT g.id, g.vhost FROM `+tx.rowSet(2, "g")+` CROSS JOIN gateways g
		WHERE g.id = j.g AND g.organization_id = $1`, orgID, js)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]string, len(ids))
	for rows.Next() {
		var id, vhost string
		if err := rows.Scan(&id, &vhost); err != nil {
			return nil, err
		}
		out[id] = vhost
	}
	return out, rows.Err()
}

func insertRevision(ctx context.Context, tx *Tx, a *API, now time.Time) (*Revision, error) {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(number), 0) FROM api_revisions WHERE api_id = $1`, a.ID).Scan(&n); err != nil {
		return nil, err
	}
	def, err := marshalJSON(a)
	if err != nil {
		return nil, err
	}
	rev := &Revision{ID: newID(), APIID: a.ID, Number: n + 1, API: a, CreatedAt: now}
	_, err = tx.ExecContext(ctx, `INSERT INTO api_revisions (id, api_id, number, definition, created_at) VALUES ($1, $2, $3, $4, $5)`,
		rev.ID, rev.APIID, rev.Number, string(def), formatTime(now))
	if err != nil {
		return nil, fmt.Errorf("insert revision: %w", err)
	}
	if err := copyOpenAPIToRevision(ctx, tx, a.ID, rev.ID); err != nil {
		return nil, err
	}
	if err := setRevisionSecretRefs(ctx, tx, rev); err != nil {
		return nil, err
	}
	return rev, nil
}

func findRevision(ctx context.Context, q queryer, apiID, id string) (*Revision, error) {
	rev := &Revision{}
	var def, handle string
	// The handle is the API's (it never changes), not part of the frozen
	// definition.
	err := q.QueryRowContext(ctx, `SELECT r.id, r.api_id, r.number, r.definition, r.created_at, a.handle
		FROM api_revisions r JOIN apis a ON a.id = r.api_id
		WHERE r.id = $1 AND r.api_id = $2`, id, apiID).Scan(&rev.ID, &rev.APIID, &rev.Number, &def, dbTime{&rev.CreatedAt}, &handle)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("revision %s of API %s not found (the newest revisions of an API and the ones deployed are kept; see PLATFORM_REVISIONS_KEEP)", id, apiID)
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(def), &rev.API); err != nil {
		return nil, fmt.Errorf("revision %s: %w", id, err)
	}
	rev.API.Handle = handle
	return rev, nil
}

// Undeploy undeploys an API from a gateway: the row stays as a tombstone
// (StateUndeployed, its deployment id kept, UNDEPLOYING) so that the gateway
// learns of it even if it is away now. The change (ChangeUndeployed) is
// published after the commit.
func (db *DB) Undeploy(ctx context.Context, orgID, apiID, gatewayID string) (*Change, error) {
	var change *Change
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		// Changes to one API take turns (see Deploy), so what is read here
		// is what the change replaces.
		if err := tx.lockRow(ctx, "apis", apiID); err != nil {
			return err
		}
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		now, err := nextStamp(ctx, tx, apiID, db.clock())
		if err != nil {
			return err
		}
		list, err := queryDeployments(ctx, tx, `WHERE d.api_id = $1 AND d.gateway_id = $2 AND d.state = $3`,
			apiID, gatewayID, StateDeployed)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("API %s is not deployed to gateway %s", apiID, gatewayID)
		}
		if _, err = tx.ExecContext(ctx, `UPDATE deployments SET state = $1, status = $2, error_code = NULL,
			performed_at = $3, resent_at = NULL, sent_at = NULL, delivered_at = NULL, acked_at = NULL
			WHERE api_id = $4 AND gateway_id = $5`, StateUndeployed, StatusUndeploying, formatTime(now), apiID, gatewayID); err != nil {
			return err
		}
		d := list[0]
		d.State, d.Status, d.ErrorCode, d.PerformedAt = StateUndeployed, StatusUndeploying, "", now
		d.DeliveredAt, d.AckedAt = nil, nil
		change = tx.record(&Change{Kind: ChangeUndeployed, Deployments: list})
		return nil
	})
	return change, err
}

// findAPIRow checks that the API exists in the organization.
func findAPIRow(ctx context.Context, q queryer, orgID, apiID string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM apis WHERE id = $1 AND organization_id = $2`, apiID, orgID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("API %s not found", apiID)
	}
	return id, err
}

func queryDeployments(ctx context.Context, tx *Tx, where string, args ...any) ([]*Deployment, error) {
	rows, err := tx.QueryContext(ctx, `SELECT d.api_id, d.gateway_id, d.deployment_id, d.revision_id, d.vhost,
		d.display_on_devportal, d.state, d.status, d.error_code, d.deployed_at, d.performed_at, d.delivered_at,
		d.acked_at, d.fetched_at FROM deployments d `+where+` ORDER BY d.performed_at DESC, d.gateway_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	list := []*Deployment{}
	for rows.Next() {
		var d Deployment
		var code sql.NullString
		if err := rows.Scan(&d.APIID, &d.GatewayID, &d.DeploymentID, &d.RevisionID, &d.Vhost, &d.DisplayOnDevportal,
			&d.State, &d.Status, &code, dbTime{&d.DeployedTime}, dbTime{&d.PerformedAt}, dbTimePtr{&d.DeliveredAt},
			dbTimePtr{&d.AckedAt}, dbTimePtr{&d.FetchedAt}); err != nil {
			return nil, err
		}
		d.ErrorCode = code.String
		list = append(list, &d)
	}
	return list, rows.Err()
}

// Deployments lists where an API of the organization is deployed, and the
// undeployments gateways have not yet been told of or have acknowledged
// within the retention time.
func (db *DB) Deployments(ctx context.Context, orgID, apiID string) ([]*Deployment, error) {
	// Pending fetch times first, so that the answer is up to date.
	if err := db.flushFetched(ctx); err != nil {
		return nil, err
	}
	var list []*Deployment
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		var err error
		list, err = queryDeployments(ctx, tx, `WHERE d.api_id = $1`, apiID)
		return err
	})
	return list, err
}

// DeployedGateways lists the gateways an API of the organization is deployed to.
func (db *DB) DeployedGateways(ctx context.Context, orgID, apiID string) ([]*Gateway, error) {
	list := []*Gateway{}
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		var err error
		list, err = collect(scanGateway)(tx.QueryContext(ctx, `SELECT g.id, g.organization_id, g.name, g.display_name,
			g.description, g.vhost, g.is_critical, g.functionality_type, g.created_at, g.updated_at
			FROM deployments d JOIN gateways g ON g.id = d.gateway_id
			WHERE d.api_id = $1 AND g.organization_id = $2 AND d.state = $3 ORDER BY g.created_at DESC, g.id`, apiID, orgID, StateDeployed))
		if err != nil {
			return err
		}
		return fillManifests(ctx, tx, list)
	})
	return list, err
}

// GatewayDeployments lists the deployments to a gateway that it must run,
// without the definitions. Gateways see only deployments to themselves, so
// never another organization's API.
func (db *DB) GatewayDeployments(ctx context.Context, gatewayID string) ([]*Deployment, error) {
	var list []*Deployment
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		list, err = queryDeployments(ctx, tx, `WHERE d.gateway_id = $1 AND d.state = $2`, gatewayID, StateDeployed)
		return err
	})
	return list, err
}

// GatewayState is everything a gateway must know about on connect: its
// deployments, its undeployment tombstones, and the tombstones of deployed
// APIs since deleted.
type GatewayState struct {
	Deployments []*Deployment // both states
	Deleted     []*DeletedDeployment
	// ResendAt, set by ResendState when some deployment is not
	// acknowledged, is the performedAt to send those with.
	ResendAt time.Time
}

// ResendState is GatewayState for a second-generation connection, which is
// sent again what its gateway has not acknowledged (both states), with a
// performedAt newer than any it was sent before, so that it applies and
// acknowledges it even if it holds it already. That stamp is recorded
// (resent_at) under the row locks of the APIs concerned, in the transaction
// that reads the state: a change committed before it is in the state and
// stamped older; one committed after it is stamped newer (nextStamp), so
// its live event is never ignored for the re-sent one, in whichever order
// the two reach the gateway.
func (db *DB) ResendState(ctx context.Context, gatewayID string) (*GatewayState, error) {
	st, err := db.GatewayState(ctx, gatewayID)
	if err != nil || !slices.ContainsFunc(st.Deployments, func(d *Deployment) bool { return d.AckedAt == nil }) {
		return st, err
	}
	err = db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		apis, err := queryStrings(ctx, tx, `SELECT DISTINCT api_id FROM deployments WHERE gateway_id = $1 AND acked_at IS NULL
			ORDER BY api_id`, gatewayID)
		if err != nil {
			return err
		}
		// Shared: re-sends to several gateways go together; a change to
		// one of these APIs waits, and is stamped after.
		if err := tx.lockShared(ctx, "apis", apis); err != nil {
			return err
		}
		// The rows in key order, as every writer of several takes them.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM deployments WHERE gateway_id = $1 AND acked_at IS NULL
			ORDER BY api_id`+tx.forUpdate(), gatewayID); err != nil {
			return err
		}
		var performed, resent time.Time
		if err := tx.QueryRowContext(ctx, `SELECT MAX(performed_at), MAX(resent_at) FROM deployments
			WHERE gateway_id = $1 AND acked_at IS NULL`, gatewayID).Scan(dbTime{&performed}, dbTime{&resent}); err != nil {
			return err
		}
		stamp := after(db.clock(), performed, resent)
		if _, err := tx.ExecContext(ctx, `UPDATE deployments SET resent_at = $1 WHERE gateway_id = $2 AND acked_at IS NULL`,
			formatTime(stamp), gatewayID); err != nil {
			return err
		}
		st = &GatewayState{ResendAt: stamp}
		if st.Deployments, err = queryDeployments(ctx, tx, `WHERE d.gateway_id = $1`, gatewayID); err != nil {
			return err
		}
		for _, d := range st.Deployments {
			if d.AckedAt == nil && !slices.Contains(apis, d.APIID) {
				return errRetry // deployed meanwhile, so not locked: read again
			}
		}
		st.Deleted, err = queryDeleted(ctx, tx, `WHERE gateway_id = $1`, gatewayID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// GatewayState reads a gateway's state in one snapshot.
func (db *DB) GatewayState(ctx context.Context, gatewayID string) (*GatewayState, error) {
	st := &GatewayState{}
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		if st.Deployments, err = queryDeployments(ctx, tx, `WHERE d.gateway_id = $1`, gatewayID); err != nil {
			return err
		}
		st.Deleted, err = queryDeleted(ctx, tx, `WHERE gateway_id = $1`, gatewayID)
		return err
	})
	return st, err
}

func queryDeleted(ctx context.Context, tx *Tx, where string, args ...any) ([]*DeletedDeployment, error) {
	rows, err := tx.QueryContext(ctx, `SELECT gateway_id, api_id, deployment_id, vhost, state, deleted_at, delivered_at
		FROM deleted_deployments `+where+` ORDER BY deleted_at, api_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var list []*DeletedDeployment
	for rows.Next() {
		var d DeletedDeployment
		if err := rows.Scan(&d.GatewayID, &d.APIID, &d.DeploymentID, &d.Vhost, &d.State, dbTime{&d.DeletedAt}, dbTimePtr{&d.DeliveredAt}); err != nil {
			return nil, err
		}
		list = append(list, &d)
	}
	return list, rows.Err()
}

// MarkFetched records that a gateway downloaded revisions of APIs (API ID
// to revision ID). It only notes the time: a background flush writes the
// notes in one transaction every fetchFlushEvery, so that a whole fleet
// downloading after a deployment costs a few writes, not one per gateway.
// A note only lands on a deployment still on the downloaded revision.
func (db *DB) MarkFetched(gatewayID string, revisions map[string]string) {
	now := db.clock().UTC()
	db.fetchMu.Lock()
	for api, rev := range revisions {
		db.fetched[fetchKey{gatewayID, api, rev}] = now
	}
	db.fetchMu.Unlock()
}

// fetchKey names one downloaded revision.
type fetchKey struct{ gateway, api, revision string }

// MarkSeen records that a gateway was active at t (a connection of it just
// ended). Like MarkFetched it is written in the next flush, so a fleet
// disconnecting at once costs one transaction; a time never moves back.
func (db *DB) MarkSeen(gatewayID string, t time.Time) {
	db.fetchMu.Lock()
	if t.After(db.seen[gatewayID]) {
		db.seen[gatewayID] = t.UTC()
	}
	db.fetchMu.Unlock()
}

// fetchFlushEvery is how often fetch times reach the database.
const fetchFlushEvery = 250 * time.Millisecond

// flushFetched writes the pending fetch and last-seen times.
func (db *DB) flushFetched(ctx context.Context) error {
	db.fetchMu.Lock()
	pending, seen := db.fetched, db.seen
	if len(pending) == 0 && len(seen) == 0 {
		db.fetchMu.Unlock()
		return nil
	}
	db.fetched, db.seen = map[fetchKey]time.Time{}, map[string]time.Time{}
	db.fetchMu.Unlock()
	// One statement for every download and one for every gateway seen
	// (rowSet). On PostgreSQL the rows are locked first in key order, the
	// order every writer of several rows keeps: two transactions locking
	// rows in opposite orders would deadlock (each costing
	// deadlock_timeout, 1 s). Deployments before gateways, as a gateway's
	// deletion takes them (DeleteGateway), and with the lock the UPDATE
	// itself takes (FOR NO KEY UPDATE): a deploy's new rows take a key-share
	// lock on their gateway, which that one does not wait for.
	type fetchRow struct {
		A string `json:"a"`
		G string `json:"g"`
		R string `json:"r"`
		T string `json:"t"`
	}
	keys := slices.SortedFunc(maps.Keys(pending), func(a, b fetchKey) int {
		return cmp.Or(strings.Compare(a.api, b.api), strings.Compare(a.gateway, b.gateway))
	})
	fetches := make([]fetchRow, len(keys))
	for i, k := range keys {
		fetches[i] = fetchRow{k.api, k.gateway, k.revision, formatTime(pending[k])}
	}
	gateways := slices.Sorted(maps.Keys(seen))
	seens := make([]fetchRow, len(gateways))
	for i, id := range gateways {
		seens[i] = fetchRow{G: id, T: formatTime(seen[id])}
	}
	fset, err := jsonRows(fetches)
	if err != nil {
		return err
	}
	sset, err := jsonRows(seens)
	if err != nil {
		return err
	}
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if len(fetches) > 0 {
			if tx.dialect == dialectPostgres {
				if _, err := tx.ExecContext(ctx, `SELECT 1 FROM deployments d JOIN `+tx.rowSet(1, "a", "g")+`
					ON d.api_id = j.a AND d.gateway_id = j.g ORDER BY d.api_id, d.gateway_id FOR NO KEY UPDATE OF d`, fset); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET fetched_at = j.t FROM `+tx.rowSet(1, "a", "g", "r", "t")+`
				WHERE deployments.api_id = j.a AND deployments.gateway_id = j.g AND deployments.revision_id = j.r`, fset); err != nil {
				return err
			}
		}
		if len(seens) > 0 {
			if tx.dialect == dialectPostgres {
				if _, err := tx.ExecContext(ctx, `SELECT 1 FROM gateways g JOIN `+tx.rowSet(1, "g")+`
					ON g.id = j.g ORDER BY g.id FOR NO KEY UPDATE OF g`, sset); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE gateways SET last_seen_at = j.t FROM `+tx.rowSet(1, "g", "t")+`
				WHERE gateways.id = j.g AND (gateways.last_seen_at IS NULL OR gateways.last_seen_at < j.t)`, sset); err != nil {
				return err
			}
		}
		return nil
	})
}

// flushLoop does the pending background work (Sync) every
// fetchFlushEvery until stop is closed, then once more.
func (db *DB) flushLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(fetchFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			db.Sync(context.Background())
			return
		}
		if err := db.Sync(context.Background()); err != nil {
			db.log.Warn("background database work failed; it is retried", "err", err)
		}
	}
}

// DeployedRevision returns the deployment of an API to a gateway
// (ErrNotFound when it is not deployed there), and whether the gateway has
// reported a manifest: which generation of document it loads.
func (db *DB) DeployedRevision(ctx context.Context, gatewayID, apiID string) (*Deployment, bool, error) {
	d := &Deployment{APIID: apiID, GatewayID: gatewayID}
	var gen2 bool
	err := db.rstmts.QueryRowContext(ctx, `SELECT d.revision_id, d.deployment_id, d.vhost,
		EXISTS (SELECT 1 FROM gateway_manifests m WHERE m.gateway_id = d.gateway_id)
		FROM deployments d WHERE d.gateway_id = $1 AND d.api_id = $2 AND d.state = $3`,
		gatewayID, apiID, StateDeployed).Scan(&d.RevisionID, &d.DeploymentID, &d.Vhost, &gen2)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, notFound("API %s is not deployed to this gateway", apiID)
	}
	if err != nil {
		return nil, false, err
	}
	return d, gen2, nil
}

// Revision returns one revision of an API, definition included.
func (db *DB) Revision(ctx context.Context, apiID, revisionID string) (*Revision, error) {
	return findRevision(ctx, db.rstmts, apiID, revisionID)
}

// DeployedAPIs lists the APIs (current definitions) deployed to a gateway of
// the organization.
func (db *DB) DeployedAPIs(ctx context.Context, orgID, gatewayID string) ([]*API, error) {
	var list []*API
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findGateway(ctx, tx, orgID, gatewayID); err != nil {
			return err
		}
		var err error
		list, err = queryAPIs(ctx, tx, `WHERE organization_id = $1 AND id IN
			(SELECT api_id FROM deployments WHERE gateway_id = $2 AND state = $3)
			ORDER BY created_at DESC, id DESC`, orgID, gatewayID, StateDeployed)
		return err
	})
	return list, err
}

// DeleteAPI deletes an API of the organization with its revisions and
// deployments. Each gateway it was deployed (or undeployed) to keeps a
// tombstone of it (deleted_deployments), and the change (ChangeAPIDeleted,
// with the removed deployments as they were) is published after the commit.
func (db *DB) DeleteAPI(ctx context.Context, orgID, id string) (*Change, error) {
	var change *Change
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "apis", id); err != nil {
			return err
		}
		deps, err := queryDeployments(ctx, tx, `JOIN apis a ON a.id = d.api_id WHERE d.api_id = $1 AND a.organization_id = $2`, id, orgID)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO deleted_deployments (gateway_id, api_id, deployment_id, vhost, state, deleted_at)
			SELECT gateway_id, api_id, deployment_id, vhost, state, $1 FROM deployments WHERE api_id = $2
			ON CONFLICT (gateway_id, api_id) DO UPDATE SET deployment_id = excluded.deployment_id,
			vhost = excluded.vhost, state = excluded.state, deleted_at = excluded.deleted_at, delivered_at = NULL`, formatTime(now), id); err != nil {
			return err
		}
		// The applications owning the API's keys lose them with it: their
		// gateways, and those the API ran on, get each one's new complete
		// key set (application.updated) after the deletion.
		apps, err := queryStrings(ctx, tx, `SELECT DISTINCT application_id FROM api_keys
			WHERE api_id = $1 AND application_id IS NOT NULL`, id)
		if err != nil {
			return err
		}
		if err := deleteAPI(ctx, tx, orgID, id); err != nil {
			return err
		}
		for _, d := range deps {
			d.PerformedAt = now
		}
		change = nil
		if len(deps) > 0 {
			change = tx.record(&Change{Kind: ChangeAPIDeleted, Deployments: deps})
		}
		evs, err := applicationEvents(ctx, tx, orgID, now, nil, ptrs(apps)...)
		if err != nil {
			return err
		}
		var ran []*string
		for _, d := range deps {
			if d.State == StateDeployed {
				ran = append(ran, &d.GatewayID)
			}
		}
		for _, ev := range evs {
			if ev.Gateways = sortedUnique(append(ptrs(ev.Gateways), ran...)); ev.Gateways == nil {
				ev.Gateways = []string{} // nil would mean every gateway of the organization
			}
		}
		return tx.recordConsumer(ctx, now, evs...)
	})
	return change, err
}

// RecordGatewayDeployment stores what a gateway reports it deployed by
// itself: the API (created in the organization's project named
// projectName), a revision of it, and the gateway's deployment, all in one
// transaction. created is false when the gateway had already reported this
// API (a repeat).
//
// lockReportingGateway locks the row of the gateway whose token makes a
// report, so that its reports take turns (a repeat sent before the first
// one committed is answered as a repeat), and returns its vhost. A gateway
// deleted while its report was under way is ErrBadToken.
func lockReportingGateway(ctx context.Context, tx *Tx, gatewayID, orgID string) (string, error) {
	if err := tx.lockRow(ctx, "gateways", gatewayID); err != nil {
		return "", err
	}
	var vhost string
	err := tx.QueryRowContext(ctx, `SELECT vhost FROM gateways WHERE id = $1 AND organization_id = $2`,
		gatewayID, orgID).Scan(&vhost)
	if errors.Is(err, sql.ErrNoRows) {
		return "", &Error{kind: ErrBadToken, msg: "the api-key header does not hold a valid gateway token"}
	}
	return vhost, err
}

// insertGatewayAPI inserts an API a gateway created by itself (its report
// or import), within the gateway's quota. The caller holds the gateway's
// row lock (lockReportingGateway), so two imports of one gateway cannot
// both take the last place.
func (db *DB) insertGatewayAPI(ctx context.Context, tx *Tx, gatewayID string, a *API, now time.Time) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM apis WHERE created_by_gateway = $1`, gatewayID).Scan(&n); err != nil {
		return err
	}
	if n >= db.maxGatewayAPIs {
		return invalid("this gateway has created %d APIs through its reports and imports, the most one gateway may (PLATFORM_MAX_GATEWAY_CREATED_APIS); delete some of them, deploy APIs to it from the control plane, or raise the setting", n)
	}
	if err := insertAPI(ctx, tx, a, now); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE apis SET created_by_gateway = $1 WHERE id = $2`, gatewayID, a.ID)
	return err
}

// A gateway may report what it runs; it never obtains what no user deployed
// to it. So an API id already in use by an API this gateway does not run
// is ErrConflict, answered alike whichever organization holds it. A gateway
// deleted while its report was under way is ErrBadToken.
func (db *DB) RecordGatewayDeployment(ctx context.Context, gatewayID string, a *API, projectName string) (created bool, err error) {
	err = db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		created = false
		vhost, err := lockReportingGateway(ctx, tx, gatewayID, a.OrganizationID)
		if err != nil {
			return err
		}
		var pid string
		err = tx.QueryRowContext(ctx, `SELECT id FROM projects WHERE organization_id = $1 AND name = $2`,
			a.OrganizationID, projectName).Scan(&pid)
		if errors.Is(err, sql.ErrNoRows) {
			return invalid("projectIdentifier: this organization has no project named %q", projectName)
		} else if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments WHERE api_id = $1 AND gateway_id = $2`,
			a.ID, gatewayID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil // a repeat
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM apis WHERE id = $1`, a.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return conflict("API id %s is already in use by an API this gateway does not run: report the API under another id", a.ID)
		}
		a.ProjectID = pid
		if err := db.insertGatewayAPI(ctx, tx, gatewayID, a, now); err != nil {
			return err
		}
		rev, err := insertRevision(ctx, tx, a, now)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO deployments (api_id, gateway_id, deployment_id, revision_id, vhost,
			display_on_devportal, state, status, deployed_at, performed_at, delivered_at)
			VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7, $8, $8, $8)`,
			a.ID, gatewayID, newID(), rev.ID, vhost, StateDeployed, StatusDelivered, formatTime(now))
		created = err == nil
		return err
	})
	return created, err
}

// sortDeployments puts deployments in primary-key order (API, gateway): the
// order in which every transaction that writes several deployment rows
// writes them, so that two never wait on each other in a cycle.
func sortDeployments(ds []*Deployment) {
	slices.SortFunc(ds, func(a, b *Deployment) int {
		return cmp.Or(strings.Compare(a.APIID, b.APIID), strings.Compare(a.GatewayID, b.GatewayID))
	})
}
