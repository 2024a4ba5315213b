package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Organization is a tenant. Every other resource belongs to exactly one.
type Organization struct {
	ID        string    `json:"id"`
	Handle    string    `json:"handle"`
	Name      string    `json:"name"`
	Region    string    `json:"region"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// DefaultProjectName is the project every organization is created with.
const DefaultProjectName = "default"

// CreateOrganization stores o and its default project in one transaction and
// sets o's timestamps. An ID or handle already taken is ErrConflict.
func (db *DB) CreateOrganization(ctx context.Context, o *Organization) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		o.CreatedAt, o.UpdatedAt = now, now
		_, err := tx.ExecContext(ctx, `INSERT INTO organizations (id, handle, name, region, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $5)`, o.ID, o.Handle, o.Name, o.Region, formatTime(now))
		if constraintOf(err) == uniqueViolation {
			return conflict("an organization with this id or handle already exists")
		}
		if err != nil {
			return fmt.Errorf("create organization: %w", err)
		}
		p := &Project{ID: newID(), OrganizationID: o.ID, Name: DefaultProjectName, Description: "Default project"}
		return insertProject(ctx, tx, p, now)
	})
}

// Organization returns the organization with the given ID.
func (db *DB) Organization(ctx context.Context, id string) (*Organization, error) {
	var o Organization
	err := db.rstmts.QueryRowContext(ctx, `SELECT id, handle, name, region, created_at, updated_at
		FROM organizations WHERE id = $1`, id).
		Scan(&o.ID, &o.Handle, &o.Name, &o.Region, dbTime{&o.CreatedAt}, dbTime{&o.UpdatedAt})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("organization %s is not registered: create it with POST /api/v1/organizations", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get organization: %w", err)
	}
	return &o, nil
}
