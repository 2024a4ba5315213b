package store

import (
	"context"
	"fmt"
	"time"
)

// RevisionSummary is one revision of an API as listed: its number, when it
// was made, and the gateways that run it now. The frozen definition is not
// part of it.
type RevisionSummary struct {
	ID        string            `json:"id"`
	Number    int               `json:"number"`
	CreatedAt time.Time         `json:"createdAt"`
	Gateways  []RevisionGateway `json:"gateways"`
}

// RevisionGateway is a gateway a revision is deployed to.
type RevisionGateway struct {
	GatewayID    string `json:"gatewayId"`
	DeploymentID string `json:"deploymentId"`
	Vhost        string `json:"vhost"`
	Status       string `json:"status"`
}

// Revisions lists the kept revisions of an API of the organization, newest
// first, each with the gateways it is deployed to, and their total. An API
// of another organization is ErrNotFound, exactly like a missing one.
func (db *DB) Revisions(ctx context.Context, orgID, apiID string, page Page) ([]*RevisionSummary, int, error) {
	list := []*RevisionSummary{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_revisions WHERE api_id = $1`, apiID).Scan(&total); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, number, created_at FROM api_revisions WHERE api_id = $1
			ORDER BY number DESC LIMIT $2 OFFSET $3`, apiID, page.Limit, page.Offset)
		if err != nil {
			return err
		}
		defer rows.Close()
		byID := map[string]*RevisionSummary{}
		for rows.Next() {
			r := &RevisionSummary{Gateways: []RevisionGateway{}}
			if err := rows.Scan(&r.ID, &r.Number, dbTime{&r.CreatedAt}); err != nil {
				return err
			}
			list = append(list, r)
			byID[r.ID] = r
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		if len(list) == 0 {
			return nil
		}
		// An API's deployments are bounded by its gateways: read them all
		// and keep those of the page's revisions.
		deps, err := queryDeployments(ctx, tx, `WHERE d.api_id = $1 AND d.state = $2`, apiID, StateDeployed)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if r := byID[d.RevisionID]; r != nil {
				r.Gateways = append(r.Gateways, RevisionGateway{GatewayID: d.GatewayID, DeploymentID: d.DeploymentID,
					Vhost: d.Vhost, Status: d.Status})
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list revisions: %w", err)
	}
	return list, total, nil
}
