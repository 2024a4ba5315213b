package store

// What second-generation gateways (contract §6) read and write besides the
// channel: their manifest, the list of their deployments to sync at start,
// batches of deployments, whether artifacts still exist, and the APIs they
// created by themselves.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Manifest is what a second-generation gateway last reported about itself.
type Manifest struct {
	Version           string    `json:"version"`
	FunctionalityType string    `json:"functionalityType"`
	Policies          []string  `json:"policies"` // "name@version"
	ReportedAt        time.Time `json:"reportedAt"`
}

// RecordManifest stores a gateway's manifest (replacing the previous one)
// and publishes ChangeManifest, so that the gateway's connections learn
// their generation.
func (db *DB) RecordManifest(ctx context.Context, gatewayID, orgID string, m *Manifest) error {
	policies, err := marshalJSON(m.Policies)
	if err != nil {
		return err
	}
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		m.ReportedAt = now
		res, err := tx.ExecContext(ctx, `INSERT INTO gateway_manifests (gateway_id, version, functionality_type, policies, reported_at)
			SELECT id, $2, $3, $4, $5 FROM gateways WHERE id = $1 AND organization_id = $6
			ON CONFLICT (gateway_id) DO UPDATE SET version = excluded.version,
			functionality_type = excluded.functionality_type, policies = excluded.policies, reported_at = excluded.reported_at`,
			gatewayID, m.Version, m.FunctionalityType, string(policies), formatTime(now), orgID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("gateway %s not found", gatewayID)
		}
		tx.record(&Change{Kind: ChangeManifest, GatewayID: gatewayID})
		return nil
	})
}

// Manifest returns what the gateway last reported, or nil when it never
// reported a manifest.
func (db *DB) Manifest(ctx context.Context, gatewayID string) (*Manifest, error) {
	var m *Manifest
	err := db.readTx(ctx, func(tx *Tx) error {
		g := &Gateway{ID: gatewayID}
		if err := fillManifests(ctx, tx, []*Gateway{g}); err != nil {
			return err
		}
		m = g.Manifest
		return nil
	})
	return m, err
}

// fillManifests sets the Manifest of each gateway that has one.
func fillManifests(ctx context.Context, tx *Tx, gws []*Gateway) error {
	byID := make(map[string]*Gateway, len(gws))
	ids := make([]string, 0, len(gws))
	for _, g := range gws {
		byID[g.ID] = g
		ids = append(ids, g.ID)
	}
	return inChunks(ctx, tx, ids, nil, func(in string) string {
		return `SELECT gateway_id, version, functionality_type, policies, reported_at
			FROM gateway_manifests WHERE gateway_id IN (` + in + `)`
	}, func(rows *sql.Rows) error {
		var id, policies string
		m := &Manifest{}
		if err := rows.Scan(&id, &m.Version, &m.FunctionalityType, &policies, dbTime{&m.ReportedAt}); err != nil {
			return err
		}
		if err := unmarshalJSON([]byte(policies), &m.Policies); err != nil {
			return fmt.Errorf("manifest of gateway %s: %w", id, err)
		}
		byID[id].Manifest = m
		return nil
	})
}

// SyncEntry is one row of a second-generation gateway's startup sync: an
// API deployed to it, or undeployed from it (or deleted), with the time of
// that last action.
type SyncEntry struct {
	APIID        string
	DeploymentID string
	State        string
	PerformedAt  time.Time
	RevisionID   string // empty for a deleted API
	Vhost        string
}

// SyncOverlap is how far before a startup sync's since its answer reaches
// back. A change is stamped when its transaction takes the API's row lock,
// and commits later, within the transaction's bound (10 s): a gateway that
// synced in between, and holds a newer stamp of another API, would miss it
// with since set to that stamp. Changes stamped within the overlap are
// answered again; a gateway takes a row only when it is newer than what it
// holds, so a repeat changes nothing.
const SyncOverlap = txTimeout + time.Second

// GatewaySync lists what a gateway runs or ran, changed after since less
// SyncOverlap (all of it when since is zero), oldest change first.
func (db *DB) GatewaySync(ctx context.Context, gatewayID string, since time.Time) ([]SyncEntry, error) {
	out := []SyncEntry{}
	if !since.IsZero() {
		since = since.Add(-SyncOverlap)
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		deps, err := queryDeployments(ctx, tx, `WHERE d.gateway_id = $1 AND d.performed_at > $2`, gatewayID, formatTime(since))
		if err != nil {
			return err
		}
		for _, d := range deps {
			out = append(out, SyncEntry{APIID: d.APIID, DeploymentID: d.DeploymentID, State: d.State,
				PerformedAt: d.PerformedAt, RevisionID: d.RevisionID, Vhost: d.Vhost})
		}
		deleted, err := queryDeleted(ctx, tx, `WHERE gateway_id = $1 AND deleted_at > $2`, gatewayID, formatTime(since))
		if err != nil {
			return err
		}
		for _, d := range deleted {
			out = append(out, SyncEntry{APIID: d.APIID, DeploymentID: d.DeploymentID, State: StateUndeployed,
				PerformedAt: d.DeletedAt, Vhost: d.Vhost})
		}
		return nil
	})
	return out, err
}

// GatewayDeploymentsByID returns the deployments of the gateway among ids
// (both states); ids of other gateways' deployments are left out.
func (db *DB) GatewayDeploymentsByID(ctx context.Context, gatewayID string, ids []string) ([]*Deployment, error) {
	var out []*Deployment
	err := db.readTx(ctx, func(tx *Tx) error {
		out = nil
		for start := 0; start < len(ids); start += inChunk {
			chunk := ids[start:min(start+inChunk, len(ids))]
			args := []any{gatewayID}
			for _, id := range chunk {
				args = append(args, id)
			}
			list, err := queryDeployments(ctx, tx, `WHERE d.gateway_id = $1 AND d.deployment_id IN (`+placeholders(2, len(chunk))+`)`, args...)
			if err != nil {
				return err
			}
			out = append(out, list...)
		}
		return nil
	})
	return out, err
}

// APIsExist reports which of ids are APIs of the organization; an API of
// another organization is answered as a missing one.
func (db *DB) APIsExist(ctx context.Context, orgID string, ids []string) (map[string]bool, error) {
	var out map[string]bool
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		out, err = idSet(ctx, tx, ids, []any{orgID}, func(in string) string {
			return `SELECT id FROM apis WHERE organization_id = $1 AND id IN (` + in + `)`
		})
		return err
	})
	return out, err
}

// ImportArtifact stores an API a second-generation gateway created by itself
// (contract §6, import-gateway-artifacts): the API in the project projectID
// (the organization's default project when empty), a revision, and the
// gateway's deployment under the gateway's own deployment id dpid, DEPLOYED,
// in one transaction. It is idempotent per dpid: a repeat returns the API
// stored the first time, with created false.
func (db *DB) ImportArtifact(ctx context.Context, gatewayID, dpid string, a *API, projectID string) (apiID string, created bool, err error) {
	err = db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		created = false
		vhost, err := lockReportingGateway(ctx, tx, gatewayID, a.OrganizationID)
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT api_id FROM deployments WHERE gateway_id = $1 AND deployment_id = $2`,
			gatewayID, dpid).Scan(&apiID)
		if err == nil {
			return nil // a repeat
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if projectID == "" {
			err = tx.QueryRowContext(ctx, `SELECT id FROM projects WHERE organization_id = $1
				ORDER BY CASE WHEN name = $2 THEN 0 ELSE 1 END, created_at LIMIT 1`, a.OrganizationID, DefaultProjectName).Scan(&projectID)
			if err != nil {
				return fmt.Errorf("default project: %w", err)
			}
		} else if _, err := findProject(ctx, tx, a.OrganizationID, projectID); errors.Is(err, ErrNotFound) {
			return invalid("project %s (annotation gateway.api-platform.wso2.com/project-id) not found in this organization", projectID)
		} else if err != nil {
			return err
		}
		a.ID, a.ProjectID = newID(), projectID
		if err := db.insertGatewayAPI(ctx, tx, gatewayID, a, now); err != nil {
			return err
		}
		rev, err := insertRevision(ctx, tx, a, now)
		if err != nil {
			return err
		}
		t := formatTime(now)
		if _, err := tx.ExecContext(ctx, `INSERT INTO deployments (api_id, gateway_id, deployment_id, revision_id, vhost,
			display_on_devportal, state, status, deployed_at, performed_at, delivered_at, acked_at)
			VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7, $8, $8, $8, $8)`,
			a.ID, gatewayID, dpid, rev.ID, vhost, StateDeployed, StatusDeployed, t); err != nil {
			return err
		}
		apiID, created = a.ID, true
		return nil
	})
	return apiID, created, err
}

// RegisterSigningKey records the public half of a replica's own JWT
// signing key under its kid, so that every replica sharing the database
// trusts the tokens it signs.
func (db *DB) RegisterSigningKey(ctx context.Context, kid, publicPEM string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO local_signing_keys (kid, public_key, added_at) VALUES ($1, $2, $3)
			ON CONFLICT (kid) DO NOTHING`, kid, publicPEM, formatTime(now))
		return err
	})
}

// SigningKey returns the public key (PEM) registered under kid.
func (db *DB) SigningKey(ctx context.Context, kid string) (string, error) {
	var pem string
	err := db.rstmts.QueryRowContext(ctx, `SELECT public_key FROM local_signing_keys WHERE kid = $1`, kid).Scan(&pem)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("no signing key %s", kid)
	}
	return pem, err
}

// Manifests returns the manifests of those of the gateways that reported
// one (second generation), by gateway.
func (db *DB) Manifests(ctx context.Context, gatewayIDs []string) (map[string]*Manifest, error) {
	out := map[string]*Manifest{}
	err := db.readTx(ctx, func(tx *Tx) error {
		gws := make([]*Gateway, len(gatewayIDs))
		for i, id := range gatewayIDs {
			gws[i] = &Gateway{ID: id}
		}
		if err := fillManifests(ctx, tx, gws); err != nil {
			return err
		}
		for _, g := range gws {
			if g.Manifest != nil {
				out[g.ID] = g.Manifest
			}
		}
		return nil
	})
	return out, err
}
