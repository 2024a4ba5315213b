package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Gateway is a registered API gateway. IsActive is not stored: the API layer
// fills it from the live connection registry, so it can never go stale.
type Gateway struct {
	ID                string    `json:"id"`
	OrganizationID    string    `json:"organizationId"`
	Name              string    `json:"name"`
	DisplayName       string    `json:"displayName"`
	Description       string    `json:"description"`
	Vhost             string    `json:"vhost"`
	IsCritical        bool      `json:"isCritical"`
	FunctionalityType string    `json:"functionalityType"`
	IsActive          bool      `json:"isActive"`
	CreatedAt         time.Time `json:"createdAt"`
	UpdatedAt         time.Time `json:"updatedAt"`
	// Manifest is what the gateway last reported, if it is of the second
	// generation (contract §6).
	Manifest *Manifest `json:"manifest,omitempty"`
}

const gatewayColumns = `id, organization_id, name, display_name, description, vhost, is_critical, functionality_type, created_at, updated_at`

func scanGateway(row rowScanner) (*Gateway, error) {
	var g Gateway
	err := row.Scan(&g.ID, &g.OrganizationID, &g.Name, &g.DisplayName, &g.Description, &g.Vhost,
		&g.IsCritical, &g.FunctionalityType, dbTime{&g.CreatedAt}, dbTime{&g.UpdatedAt})
	return &g, err
}

// CreateGateway registers g in g.OrganizationID. A name already used in the
// organization is ErrConflict (from the UNIQUE constraint, so two concurrent
// registrations cannot both win); an unregistered organization is ErrInvalid.
func (db *DB) CreateGateway(ctx context.Context, g *Gateway) error {
	g.ID = newID()
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		g.CreatedAt, g.UpdatedAt = now, now
		_, err := tx.ExecContext(ctx, `INSERT INTO gateways (`+gatewayColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
			g.ID, g.OrganizationID, g.Name, g.DisplayName, g.Description, g.Vhost, g.IsCritical, g.FunctionalityType, formatTime(now))
		switch constraintOf(err) {
		case uniqueViolation:
			return conflict("a gateway named %q already exists in this organization", g.Name)
		case foreignKeyViolation:
			return invalid("organization %s is not registered: create it with POST /api/v1/organizations first", g.OrganizationID)
		}
		if err != nil {
			return fmt.Errorf("create gateway: %w", err)
		}
		return nil
	})
}

// Gateways lists the organization's gateways, newest first, and the total.
func (db *DB) Gateways(ctx context.Context, orgID string, page Page) ([]*Gateway, int, error) {
	list := []*Gateway{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM gateways WHERE organization_id = $1`, orgID).Scan(&total); err != nil {
			return err
		}
		var err error
		list, err = collect(scanGateway)(tx.QueryContext(ctx, `SELECT `+gatewayColumns+` FROM gateways WHERE organization_id = $1
			ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`, orgID, page.Limit, page.Offset))
		if err != nil {
			return err
		}
		return fillManifests(ctx, tx, list)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list gateways: %w", err)
	}
	return list, total, nil
}

// Gateway returns one gateway of the organization. A gateway of another
// organization is ErrNotFound, exactly like a missing one.
func (db *DB) Gateway(ctx context.Context, orgID, id string) (*Gateway, error) {
	var g *Gateway
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		if g, err = findGateway(ctx, tx, orgID, id); err != nil {
			return err
		}
		return fillManifests(ctx, tx, []*Gateway{g})
	})
	return g, err
}

func findGateway(ctx context.Context, q queryer, orgID, id string) (*Gateway, error) {
	g, err := scanGateway(q.QueryRowContext(ctx, `SELECT `+gatewayColumns+` FROM gateways
		WHERE id = $1 AND organization_id = $2`, id, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("gateway %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get gateway: %w", err)
	}
	return g, nil
}

// UpdateGateway reads the gateway, lets change modify it (or refuse with an
// error), and stores the result, all in one transaction.
func (db *DB) UpdateGateway(ctx context.Context, orgID, id string, change func(*Gateway) error) (*Gateway, error) {
	var g *Gateway
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "gateways", id); err != nil {
			return err
		}
		var err error
		if g, err = findGateway(ctx, tx, orgID, id); err != nil {
			return err
		}
		if err := change(g); err != nil {
			return err
		}
		g.UpdatedAt = now
		_, err = tx.ExecContext(ctx, `UPDATE gateways SET display_name = $1, description = $2, vhost = $3,
			is_critical = $4, updated_at = $5 WHERE id = $6`,
			g.DisplayName, g.Description, g.Vhost, g.IsCritical, formatTime(now), g.ID)
		if err != nil {
			return err
		}
		return fillManifests(ctx, tx, []*Gateway{g})
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// DeleteGateway removes the gateway with its tokens and deployments (the
// foreign keys cascade inside the one statement's transaction). The change
// (ChangeGatewayDeleted) is published after the commit.
func (db *DB) DeleteGateway(ctx context.Context, orgID, id string) (*Change, error) {
	var change *Change
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		// The gateway's deployment rows first, in key order, then its own
		// row: the order in which the writers of fetch and last-seen times
		// take them (flushFetched). Left to the cascade, the deletion took
		// the gateway's row first and its deployments after, and deleting
		// gateways while others' downloads were written deadlocked now and
		// then (each a second lost to deadlock_timeout).
		if tx.dialect == dialectPostgres {
			if _, err := tx.ExecContext(ctx, `SELECT 1 FROM deployments d JOIN gateways g ON g.id = d.gateway_id
				WHERE d.gateway_id = $1 AND g.organization_id = $2 ORDER BY d.api_id FOR UPDATE OF d`, id, orgID); err != nil {
				return fmt.Errorf("delete gateway: %w", err)
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM gateways WHERE id = $1 AND organization_id = $2`, id, orgID)
		if err != nil {
			return fmt.Errorf("delete gateway: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("gateway %s not found", id)
		}
		change = tx.record(&Change{Kind: ChangeGatewayDeleted, GatewayID: id})
		return nil
	})
	return change, err
}

// GatewayStatus is a gateway with when it was last seen while not
// connected: the later of the end of its last connection and the last
// verification of one of its tokens.
type GatewayStatus struct {
	Gateway
	LastSeen *time.Time
}

// GatewayStatuses lists the organization's gateways (or the one named by
// gatewayID, when not empty) with when they were last seen.
func (db *DB) GatewayStatuses(ctx context.Context, orgID, gatewayID string, page Page) ([]*GatewayStatus, int, error) {
	if err := db.flushFetched(ctx); err != nil {
		return nil, 0, err
	}
	list := []*GatewayStatus{}
	var total int
	cond, args := `g.organization_id = $1`, []any{orgID}
	if gatewayID != "" {
		cond, args = cond+` AND g.id = $2`, append(args, gatewayID)
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM gateways g WHERE `+cond, args...).Scan(&total); err != nil {
			return err
		}
		n := len(args)
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(`SELECT g.id, g.organization_id, g.name, g.display_name, g.description,
			g.vhost, g.is_critical, g.functionality_type, g.created_at, g.updated_at, g.last_seen_at,
			(SELECT MAX(t.last_used_at) FROM gateway_tokens t WHERE t.gateway_id = g.id)
			FROM gateways g WHERE %s ORDER BY g.created_at DESC, g.id DESC LIMIT $%d OFFSET $%d`, cond, n+1, n+2),
			append(args, page.Limit, page.Offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s GatewayStatus
			g := &s.Gateway
			var seen, tokenUse *time.Time
			if err := rows.Scan(&g.ID, &g.OrganizationID, &g.Name, &g.DisplayName, &g.Description, &g.Vhost,
				&g.IsCritical, &g.FunctionalityType, dbTime{&g.CreatedAt}, dbTime{&g.UpdatedAt}, dbTimePtr{&seen}, dbTimePtr{&tokenUse}); err != nil {
				return err
			}
			s.LastSeen = seen
			if tokenUse != nil && (seen == nil || tokenUse.After(*seen)) {
				s.LastSeen = tokenUse
			}
			list = append(list, &s)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("gateway status: %w", err)
	}
	if gatewayID != "" && total == 0 {
		return nil, 0, notFound("gateway %s not found", gatewayID)
	}
	return list, total, nil
}
