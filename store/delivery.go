package store

// How far each deployment got: what delivering it did, what the gateways
// acknowledged, and what never came back in time. Every update names the
// deployment id it is about, so a late report about an older deployment of
// the same API to the same gateway changes nothing.

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"
)

// Delivery is what delivering one deployment's current action did.
type Delivery struct {
	APIID, GatewayID, DeploymentID string
	// Status is what the deployment becomes: DELIVERED or UNDEPLOYED (a
	// first-generation connection took it), DEPLOYING or UNDEPLOYING (a
	// second-generation connection took it; an acknowledgement will
	// follow).
	Status string
}

// RecordDeliveries records deliveries, in one transaction. A delivery only
// moves a deployment forward: one already acknowledged keeps its status.
func (db *DB) RecordDeliveries(ctx context.Context, ds []Delivery) error {
	return db.recordDeliveries(ctx, ds, false)
}

// RecordConnectDeliveries records the deliveries of a connection's initial
// state, and publishes the statuses it changed (ChangeStatus): a deploy
// request may be waiting for them, on any replica.
func (db *DB) RecordConnectDeliveries(ctx context.Context, ds []Delivery) error {
	return db.recordDeliveries(ctx, ds, true)
}

func (db *DB) recordDeliveries(ctx context.Context, ds []Delivery, publish bool) error {
	if len(ds) == 0 {
		return nil
	}
	ds = slices.Clone(ds)
	slices.SortFunc(ds, func(a, b Delivery) int {
		return cmp.Or(strings.Compare(a.APIID, b.APIID), strings.Compare(a.GatewayID, b.GatewayID))
	})
	type row struct {
		A string `json:"a"`
		G string `json:"g"`
		D string `json:"d"`
		S string `json:"s"` // the status it becomes
		T string `json:"t"` // the state it must be in
		W string `json:"w"` // "1": sent to a second generation, an acknowledgement will follow
	}
	rows := make([]row, len(ds))
	waits := false
	for i, d := range ds {
		// The state guard keeps a deploy's delivery from landing on the
		// undeployment that replaced it, and the other way round.
		state := StateDeployed
		if d.Status == StatusUndeploying || d.Status == StatusUndeployed {
			state = StateUndeployed
		}
		w := d.Status == StatusDeploying || d.Status == StatusUndeploying
		waits = waits || w
		rows[i] = row{d.APIID, d.GatewayID, d.DeploymentID, d.Status, state, flag(w)}
	}
	set, err := jsonRows(rows)
	if err != nil {
		return err
	}
	record := func(tx *Tx, now time.Time) error {
		if waits {
			db.scheduleExpiry(now)
		}
		// One statement for every delivery (rowSet). On PostgreSQL the rows
		// are locked first, in key order, the order every writer of
		// several rows keeps: an UPDATE ... FROM takes them in the order
		// of its join. SQLite has one writer.
		if tx.dialect == dialectPostgres {
			if _, err := tx.ExecContext(ctx, `SELECT 1 FROM deployments d JOIN `+tx.rowSet(1, "a", "g")+`
				ON d.api_id = j.a AND d.gateway_id = j.g ORDER BY d.api_id, d.gateway_id FOR UPDATE OF d`, set); err != nil {
				return err
			}
		}
		update := `UPDATE deployments SET status = j.s, delivered_at = $1,
			sent_at = CASE WHEN j.w = '1' THEN $1 ELSE deployments.sent_at END
			FROM ` + tx.rowSet(2, "a", "g", "d", "s", "t", "w") + `
			WHERE deployments.api_id = j.a AND deployments.gateway_id = j.g AND deployments.deployment_id = j.d
			AND deployments.state = j.t AND deployments.acked_at IS NULL`
		// Which rows changed matters only to publish them, or to note the
		// acknowledgements owed (PostgreSQL). Otherwise (a deployment's
		// own deliveries on SQLite) the rows need not come back: scanning
		// them cost as much as updating them.
		if !publish && (!waits || tx.dialect != dialectPostgres) {
			_, err := tx.ExecContext(ctx, update, formatTime(now), set)
			return err
		}
		rs, err := tx.QueryContext(ctx, update+`
			RETURNING deployments.api_id, deployments.gateway_id, deployments.deployment_id, deployments.status`, formatTime(now), set)
		if err != nil {
			return err
		}
		var changed []string
		var waiting []row
		for rs.Next() {
			var r row
			// (SQLite's RETURNING sees only the updated table: the status
			// tells whether an acknowledgement will follow.)
			if err := rs.Scan(&r.A, &r.G, &r.D, &r.S); err != nil {
				rs.Close()
				return err
			}
			if publish && !slices.Contains(changed, r.A) {
				changed = append(changed, r.A)
			}
			if r.S == StatusDeploying || r.S == StatusUndeploying {
				waiting = append(waiting, r)
			}
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
		// With replicas, this one's connections now owe an
		// acknowledgement: the deployment is final only when no replica's
		// do (ApplyAcks). Unless the acknowledgement came first (the
		// update found it acknowledged).
		if len(waiting) > 0 && db.dialect == dialectPostgres {
			slices.SortFunc(waiting, func(a, b row) int { return cmp.Or(strings.Compare(a.A, b.A), strings.Compare(a.G, b.G)) })
			wset, err := jsonRows(waiting)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO ack_waits (api_id, gateway_id, deployment_id, replica_id)
				SELECT j.a, j.g, j.d, CAST($1 AS TEXT) FROM `+tx.rowSet(2, "a", "g", "d")+` WHERE true ORDER BY j.a, j.g
				ON CONFLICT (api_id, gateway_id, replica_id) DO UPDATE SET deployment_id = excluded.deployment_id`,
				db.replica, wset); err != nil {
				return err
			}
		}
		if len(changed) > 0 {
			tx.record(&Change{Kind: ChangeStatus, APIIDs: changed})
		}
		return nil
	}
	err = db.writeTx(ctx, record)
	if pgConstraint(err) == "ack_waits_replica_id_fkey" {
		// This replica was taken for dead and its row swept (it stalled
		// past twice its lease): its wait for an acknowledgement has no
		// replica to name, and the deliveries were refused with it. It
		// comes back first, as its next lease renewal would (its row and
		// its connections written again), then records them.
		db.fetchMu.Lock()
		db.renewedAt = time.Time{}
		db.fetchMu.Unlock()
		if err := db.renewLease(ctx); err != nil {
			return err
		}
		err = db.writeTx(ctx, record)
	}
	return err
}

// MarkDeletedDelivered records that the deletion of APIs reached gateways
// (a tombstone then stops being sent on connect).
func (db *DB) MarkDeletedDelivered(ctx context.Context, gatewayID string, apiIDs []string) error {
	if len(apiIDs) == 0 {
		return nil
	}
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		for _, id := range apiIDs {
			if _, err := tx.ExecContext(ctx, `UPDATE deleted_deployments SET delivered_at = $1
				WHERE gateway_id = $2 AND api_id = $3`, formatTime(now), gatewayID, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// Ack is a gateway's acknowledgement of one deployment's action.
type Ack struct {
	APIID, GatewayID, DeploymentID string
	Undeploy                       bool   // the action acknowledged
	Failed                         bool   // the gateway reports failure
	ErrorCode                      string // when Failed
	// Final is false for the success of one connection of a gateway whose
	// other connections still owe theirs: it records nothing yet.
	Final bool
}

// ApplyAcks records acknowledgements, in one transaction; the APIs whose
// deployments changed are published (ChangeStatus). An acknowledgement of another deployment
// id than the current one (stale), or of an action that is no longer the
// deployment's (a deploy acknowledged after the undeploy), changes nothing.
func (db *DB) ApplyAcks(ctx context.Context, acks []Ack) error {
	acks = slices.Clone(acks)
	slices.SortStableFunc(acks, func(a, b Ack) int { // key order (sortDeployments); a gateway's acks keep theirs
		return cmp.Or(strings.Compare(a.APIID, b.APIID), strings.Compare(a.GatewayID, b.GatewayID))
	})
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var changed []string
		for _, a := range acks {
			if !a.Final {
				continue
			}
			state, status := StateDeployed, StatusDeployed
			if a.Undeploy {
				state, status = StateUndeployed, StatusUndeployed
			}
			code := any(nil)
			if a.Failed {
				status, code = StatusFailed, a.ErrorCode
			}
			if db.dialect == dialectPostgres {
				final, err := db.lastToAcknowledge(ctx, tx, a)
				if err != nil {
					return err
				}
				if !final {
					continue
				}
			}
			res, err := tx.ExecContext(ctx, `UPDATE deployments SET status = $1, error_code = $2, acked_at = $3, sent_at = NULL
				WHERE api_id = $4 AND gateway_id = $5 AND deployment_id = $6 AND state = $7`,
				status, code, formatTime(now), a.APIID, a.GatewayID, a.DeploymentID, state)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				changed = append(changed, a.APIID)
			}
		}
		if len(changed) > 0 {
			tx.record(&Change{Kind: ChangeStatus, APIIDs: changed})
		}
		return nil
	})
}

// lastToAcknowledge records that this replica's connections have all
// acknowledged a deployment's action, and reports whether no other live
// replica's still owe it (a failure is final at once, for every replica).
// The deployment's row is locked first, so that two replicas finishing at
// once cannot both see the other still owing: the second sees the first's
// row gone.
func (db *DB) lastToAcknowledge(ctx context.Context, tx *Tx, a Ack) (bool, error) {
	// The deployment's row first, then ack_waits: the order in which
	// RecordDeliveries writes them.
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM deployments WHERE api_id = $1 AND gateway_id = $2 FOR UPDATE`,
		a.APIID, a.GatewayID); err != nil {
		return false, err
	}
	if a.Failed {
		_, err := tx.ExecContext(ctx, `DELETE FROM ack_waits WHERE api_id = $1 AND gateway_id = $2`, a.APIID, a.GatewayID)
		return true, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ack_waits WHERE api_id = $1 AND gateway_id = $2 AND replica_id = $3`,
		a.APIID, a.GatewayID, db.replica); err != nil {
		return false, err
	}
	// This replica's own row is not counted: a is final for this replica's
	// connections (the fleet knows), and its row may be younger than the
	// acknowledgement (the delivery is recorded after the event went out).
	var others int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM ack_waits w JOIN replicas r ON r.id = w.replica_id
		WHERE w.api_id = $1 AND w.gateway_id = $2 AND w.deployment_id = $3 AND w.replica_id <> $4 AND `+liveReplica("$5"),
		a.APIID, a.GatewayID, a.DeploymentID, db.replica, formatTime(db.clock().Add(-db.lease))).Scan(&others)
	return others == 0, err
}

// ExpireAcks fails every deployment sent to a second-generation connection
// before cutoff and not acknowledged since (DEPLOYMENT_TIMEOUT); the APIs
// concerned are published (ChangeStatus).
func (db *DB) ExpireAcks(ctx context.Context, cutoff time.Time) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if db.dialect == dialectPostgres {
			// With replicas, the one that sent a deployment may be gone:
			// a gateway with no live connection on any replica is offline,
			// and what it owes waits for its return, as on one process.
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET sent_at = NULL,
				status = CASE status WHEN $1 THEN $2 ELSE status END
				WHERE status IN ($1, $3) AND sent_at < $4 AND NOT EXISTS (SELECT 1 FROM gateway_connections c
					JOIN replicas r ON r.id = c.replica_id WHERE c.gateway_id = deployments.gateway_id AND `+liveReplica("$5")+`)`,
				StatusDeploying, StatusPending, StatusUndeploying, formatTime(cutoff), formatTime(now.Add(-db.lease))); err != nil {
				return err
			}
		}
		apis, err := queryStrings(ctx, tx, `SELECT DISTINCT api_id FROM deployments
			WHERE status IN ($1, $2) AND sent_at < $3`, StatusDeploying, StatusUndeploying, formatTime(cutoff))
		if err != nil || len(apis) == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE deployments SET status = $1, error_code = $2, sent_at = NULL
			WHERE status IN ($3, $4) AND sent_at < $5`,
			StatusFailed, ErrorDeploymentTimeout, StatusDeploying, StatusUndeploying, formatTime(cutoff))
		if err == nil {
			tx.record(&Change{Kind: ChangeStatus, APIIDs: apis})
		}
		return err
	})
}

// GatewayOffline records that a gateway has no live connection left: what
// it was sent and did not acknowledge waits for its return (PENDING, or
// UNDEPLOYING), and is not timed out meanwhile. The APIs concerned are
// published (ChangeStatus).
func (db *DB) GatewayOffline(ctx context.Context, gatewayID string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		apis, err := queryStrings(ctx, tx, `SELECT api_id FROM deployments
			WHERE gateway_id = $1 AND status IN ($2, $3)`, gatewayID, StatusDeploying, StatusUndeploying)
		if err != nil || len(apis) == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE deployments SET sent_at = NULL,
			status = CASE status WHEN $1 THEN $2 ELSE status END
			WHERE gateway_id = $3 AND status IN ($1, $4)`, StatusDeploying, StatusPending, gatewayID, StatusUndeploying)
		if err == nil && db.dialect == dialectPostgres {
			_, err = tx.ExecContext(ctx, `DELETE FROM ack_waits WHERE gateway_id = $1`, gatewayID)
		}
		if err == nil {
			tx.record(&Change{Kind: ChangeStatus, APIIDs: apis})
		}
		return err
	})
}

// PruneTombstones forgets undeployments and deletions older than cutoff.
func (db *DB) PruneTombstones(ctx context.Context, cutoff time.Time) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM deployments WHERE state = $1 AND performed_at < $2`,
			StateUndeployed, formatTime(cutoff)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM deleted_deployments WHERE deleted_at < $1`, formatTime(cutoff))
		return err
	})
}

// DeploymentStatuses returns the current deployment of an API to each of
// the gateways, by gateway id (ErrNotFound is not an error here: a gateway
// missing from the answer has no deployment of the API any more).
func (db *DB) DeploymentStatuses(ctx context.Context, apiID string, gatewayIDs []string) (map[string]*Deployment, error) {
	out := make(map[string]*Deployment, len(gatewayIDs))
	err := db.readTx(ctx, func(tx *Tx) error {
		for start := 0; start < len(gatewayIDs); start += inChunk {
			chunk := gatewayIDs[start:min(start+inChunk, len(gatewayIDs))]
			args := []any{apiID}
			for _, g := range chunk {
				args = append(args, g)
			}
			list, err := queryDeployments(ctx, tx, `WHERE d.api_id = $1 AND d.gateway_id IN (`+placeholders(2, len(chunk))+`)`, args...)
			if err != nil {
				return err
			}
			for _, d := range list {
				out[d.GatewayID] = d
			}
		}
		return nil
	})
	return out, err
}
