package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
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

// Deployment is the revision of an API that one gateway runs.
type Deployment struct {
	APIID              string     `json:"-"`
	GatewayID          string     `json:"gatewayId"`
	RevisionID         string     `json:"revisionId"`
	Vhost              string     `json:"vhost"`
	DisplayOnDevportal bool       `json:"-"`
	Status             string     `json:"status"`
	DeployedTime       time.Time  `json:"deployedTime"`
	DeliveredAt        *time.Time `json:"deliveredAt"`
	FetchedAt          *time.Time `json:"fetchedAt"`
}

// Deployment statuses.
const (
	StatusPending   = "PENDING"
	StatusDelivered = "DELIVERED"
)

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
		// Rows go in batches of upsertChunk: one statement per batch, not
		// per gateway, keeps a deploy to a whole fleet short. The revision,
		// status and time are shared parameters ($1..$4).
		for start := 0; start < len(targets); start += upsertChunk {
			chunk := targets[start:min(start+upsertChunk, len(targets))]
			args := []any{apiID, rev.ID, StatusPending, formatTime(now)}
			var values strings.Builder
			for i, t := range chunk {
				if i > 0 {
					values.WriteString(", ")
				}
				n := len(args)
				fmt.Fprintf(&values, "($1, $%d, $2, $%d, $%d, $3, $4)", n+1, n+2, n+3)
				args = append(args, t.GatewayID, t.Vhost, t.DisplayOnDevportal)
				deps = append(deps, &Deployment{APIID: apiID, GatewayID: t.GatewayID, RevisionID: rev.ID, Vhost: t.Vhost,
					DisplayOnDevportal: t.DisplayOnDevportal, Status: StatusPending, DeployedTime: now})
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO deployments (api_id, gateway_id, revision_id, vhost,
				display_on_devportal, status, deployed_at) VALUES `+values.String()+`
				ON CONFLICT (api_id, gateway_id) DO UPDATE SET revision_id = excluded.revision_id,
				vhost = excluded.vhost, display_on_devportal = excluded.display_on_devportal,
				status = excluded.status, deployed_at = excluded.deployed_at, delivered_at = NULL, fetched_at = NULL`, args...)
			if err != nil {
				return fmt.Errorf("record deployments: %w", err)
			}
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

// upsertChunk is how many deployment rows one INSERT carries (3 bound
// parameters each, well under the limits of SQLite and PostgreSQL).
const upsertChunk = 200

// inChunk is how many values one IN (...) list holds, well under SQLite's
// and PostgreSQL's limits on bound parameters.
const inChunk = 500

// gatewayVhosts returns the vhost of each listed gateway of the
// organization, in a few queries rather than one per gateway.
func gatewayVhosts(ctx context.Context, tx *Tx, orgID string, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for start := 0; start < len(ids); start += inChunk {
		chunk := ids[start:min(start+inChunk, len(ids))]
		args := []any{orgID}
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, vhost FROM gateways WHERE organization_id = $1 AND id IN (`+
			placeholders(2, len(chunk))+`)`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id, vhost string
			if err := rows.Scan(&id, &vhost); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = vhost
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
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
	return rev, nil
}

func findRevision(ctx context.Context, q queryer, apiID, id string) (*Revision, error) {
	rev := &Revision{}
	var def string
	err := q.QueryRowContext(ctx, `SELECT id, api_id, number, definition, created_at FROM api_revisions
		WHERE id = $1 AND api_id = $2`, id, apiID).Scan(&rev.ID, &rev.APIID, &rev.Number, &def, dbTime{&rev.CreatedAt})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("revision %s of API %s not found (the newest revisions of an API and the ones deployed are kept; see PLATFORM_REVISIONS_KEEP)", id, apiID)
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(def), &rev.API); err != nil {
		return nil, fmt.Errorf("revision %s: %w", id, err)
	}
	return rev, nil
}

// MarkDelivered records that the deployments of the API to these gateways
// reached at least one live connection. Only rows still on revisionID change,
// so a slow mark cannot overwrite a newer deployment's status.
func (db *DB) MarkDelivered(ctx context.Context, apiID, revisionID string, gatewayIDs []string) error {
	if len(gatewayIDs) == 0 {
		return nil
	}
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		for start := 0; start < len(gatewayIDs); start += inChunk {
			chunk := gatewayIDs[start:min(start+inChunk, len(gatewayIDs))]
			args := []any{StatusDelivered, formatTime(now), apiID, revisionID}
			for _, g := range chunk {
				args = append(args, g)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET status = $1, delivered_at = $2
				WHERE api_id = $3 AND revision_id = $4 AND gateway_id IN (`+placeholders(5, len(chunk))+`)`, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// Undeploy removes the deployment of an API from a gateway; the change
// (ChangeUndeployed) is published after the commit.
func (db *DB) Undeploy(ctx context.Context, orgID, apiID, gatewayID string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		list, err := queryDeployments(ctx, tx, `WHERE d.api_id = $1 AND d.gateway_id = $2`, apiID, gatewayID)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("API %s is not deployed to gateway %s", apiID, gatewayID)
		}
		if _, err = tx.ExecContext(ctx, `DELETE FROM deployments WHERE api_id = $1 AND gateway_id = $2`, apiID, gatewayID); err != nil {
			return err
		}
		tx.record(&Change{Kind: ChangeUndeployed, Deployments: list})
		return nil
	})
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
	rows, err := tx.QueryContext(ctx, `SELECT d.api_id, d.gateway_id, d.revision_id, d.vhost, d.display_on_devportal,
		d.status, d.deployed_at, d.delivered_at, d.fetched_at FROM deployments d `+where+` ORDER BY d.deployed_at DESC, d.gateway_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	list := []*Deployment{}
	for rows.Next() {
		var d Deployment
		if err := rows.Scan(&d.APIID, &d.GatewayID, &d.RevisionID, &d.Vhost, &d.DisplayOnDevportal, &d.Status,
			dbTime{&d.DeployedTime}, dbTimePtr{&d.DeliveredAt}, dbTimePtr{&d.FetchedAt}); err != nil {
			return nil, err
		}
		list = append(list, &d)
	}
	return list, rows.Err()
}

// Deployments lists where an API of the organization is deployed.
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
			WHERE d.api_id = $1 AND g.organization_id = $2 ORDER BY g.created_at DESC, g.id`, apiID, orgID))
		return err
	})
	return list, err
}

// GatewayDeployments lists the deployments to a gateway: what it must run,
// without the definitions. Gateways see only deployments to themselves, so
// never another organization's API.
func (db *DB) GatewayDeployments(ctx context.Context, gatewayID string) ([]*Deployment, error) {
	var list []*Deployment
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		list, err = queryDeployments(ctx, tx, `WHERE d.gateway_id = $1`, gatewayID)
		return err
	})
	return list, err
}

// MarkFetched records that a gateway downloaded revisions of APIs (API ID
// to revision ID). It only notes the time: a background flush writes the
// notes in one transaction every fetchFlushEvery, so that a whole fleet
// downloading after a deployment costs a few writes, not one per gateway.
// A note only lands on a deployment still on the downloaded revision.
func (db *DB) MarkFetched(gatewayID string, revisions map[string]string) {
	now := db.Now().UTC()
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
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		for k, t := range pending {
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET fetched_at = $1
				WHERE gateway_id = $2 AND api_id = $3 AND revision_id = $4`,
				formatTime(t), k.gateway, k.api, k.revision); err != nil {
				return err
			}
		}
		for id, t := range seen {
			if _, err := tx.ExecContext(ctx, `UPDATE gateways SET last_seen_at = $1
				WHERE id = $2 AND (last_seen_at IS NULL OR last_seen_at < $1)`, formatTime(t), id); err != nil {
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

// DeployedRevision returns the ID of the revision of an API deployed to a
// gateway (ErrNotFound when it is not deployed there).
func (db *DB) DeployedRevision(ctx context.Context, gatewayID, apiID string) (string, error) {
	var id string
	err := db.rstmts.QueryRowContext(ctx, `SELECT revision_id FROM deployments WHERE gateway_id = $1 AND api_id = $2`,
		gatewayID, apiID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("API %s is not deployed to this gateway", apiID)
	}
	return id, err
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
		list, err = queryAPIs(ctx, tx, `WHERE organization_id = $1 AND id IN (SELECT api_id FROM deployments WHERE gateway_id = $2)
			ORDER BY created_at DESC, id DESC`, orgID, gatewayID)
		return err
	})
	return list, err
}

// DeleteAPI deletes an API of the organization with its revisions and
// deployments. When it was deployed, the change (ChangeAPIDeleted, with the
// removed deployments) is published after the commit.
func (db *DB) DeleteAPI(ctx context.Context, orgID, id string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		deps, err := queryDeployments(ctx, tx, `JOIN apis a ON a.id = d.api_id WHERE d.api_id = $1 AND a.organization_id = $2`, id, orgID)
		if err != nil {
			return err
		}
		if err := deleteAPI(ctx, tx, orgID, id); err != nil {
			return err
		}
		if len(deps) > 0 {
			tx.record(&Change{Kind: ChangeAPIDeleted, Deployments: deps})
		}
		return nil
	})
}

// RecordGatewayDeployment stores what a gateway reports it deployed by
// itself: the API (created in the organization's project named
// projectName), a revision of it, and the gateway's deployment, all in one
// transaction. created is false when the gateway had already reported this
// API (a repeat).
//
// A gateway may report what it runs; it never obtains what no user deployed
// to it. So an API id already in use by an API this gateway does not run
// is ErrConflict, answered alike whichever organization holds it. A gateway
// deleted while its report was under way is ErrBadToken.
func (db *DB) RecordGatewayDeployment(ctx context.Context, gatewayID string, a *API, projectName string) (created bool, err error) {
	err = db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		created = false
		var vhost string
		err := tx.QueryRowContext(ctx, `SELECT vhost FROM gateways WHERE id = $1 AND organization_id = $2`,
			gatewayID, a.OrganizationID).Scan(&vhost)
		if errors.Is(err, sql.ErrNoRows) {
			return &Error{kind: ErrBadToken, msg: "the gateway of this token no longer exists"}
		} else if err != nil {
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
		if err := insertAPI(ctx, tx, a, now); err != nil {
			return err
		}
		rev, err := insertRevision(ctx, tx, a, now)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO deployments (api_id, gateway_id, revision_id, vhost,
			display_on_devportal, status, deployed_at, delivered_at)
			VALUES ($1, $2, $3, $4, FALSE, $5, $6, $6)`,
			a.ID, gatewayID, rev.ID, vhost, StatusDelivered, formatTime(now))
		created = err == nil
		return err
	})
	return created, err
}
