package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Project groups APIs inside an organization.
type Project struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	OrganizationID string    `json:"organizationId"`
	Description    string    `json:"description"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
}

// ProjectUpdate holds the fields a PUT changes; nil leaves a field alone.
type ProjectUpdate struct {
	Name        *string
	Description *string
}

const projectColumns = `id, name, organization_id, description, created_at, updated_at`

func scanProject(row rowScanner) (*Project, error) {
	var p Project
	err := row.Scan(&p.ID, &p.Name, &p.OrganizationID, &p.Description, dbTime{&p.CreatedAt}, dbTime{&p.UpdatedAt})
	return &p, err
}

// CreateProject stores p in organization p.OrganizationID. A name already used
// in the organization is ErrConflict; an organization that is not registered
// is ErrInvalid.
func (db *DB) CreateProject(ctx context.Context, p *Project) error {
	p.ID = newID()
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		return insertProject(ctx, tx, p, now)
	})
}

func insertProject(ctx context.Context, tx *Tx, p *Project, now time.Time) error {
	p.CreatedAt, p.UpdatedAt = now, now
	_, err := tx.ExecContext(ctx, `INSERT INTO projects (`+projectColumns+`)
		VALUES ($1, $2, $3, $4, $5, $5)`, p.ID, p.Name, p.OrganizationID, p.Description, formatTime(now))
	switch constraintOf(err) {
	case uniqueViolation:
		return conflict("a project named %q already exists in this organization", p.Name)
	case foreignKeyViolation:
		return invalid("organization %s is not registered: create it with POST /api/v1/organizations first", p.OrganizationID)
	}
	if err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	return nil
}

// Projects lists the organization's projects, newest first, and the total.
func (db *DB) Projects(ctx context.Context, orgID string, page Page) ([]*Project, int, error) {
	list := []*Project{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM projects WHERE organization_id = $1`, orgID).Scan(&total); err != nil {
			return err
		}
		var err error
		list, err = collect(scanProject)(tx.QueryContext(ctx, `SELECT `+projectColumns+` FROM projects WHERE organization_id = $1
			ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`, orgID, page.Limit, page.Offset))
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list projects: %w", err)
	}
	return list, total, nil
}

// Project returns one project of the organization. A project of another
// organization is ErrNotFound, exactly like a missing one.
func (db *DB) Project(ctx context.Context, orgID, id string) (*Project, error) {
	return findProject(ctx, db.rstmts, orgID, id)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func findProject(ctx context.Context, q queryer, orgID, id string) (*Project, error) {
	p, err := scanProject(q.QueryRowContext(ctx, `SELECT `+projectColumns+` FROM projects
		WHERE id = $1 AND organization_id = $2`, id, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("project %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get project: %w", err)
	}
	return p, nil
}

// UpdateProject changes the fields set in u and returns the stored project.
// A rename onto a name in use is ErrConflict.
func (db *DB) UpdateProject(ctx context.Context, orgID, id string, u ProjectUpdate) (*Project, error) {
	var p *Project
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "projects", id); err != nil {
			return err
		}
		var err error
		if p, err = findProject(ctx, tx, orgID, id); err != nil {
			return err
		}
		if u.Name != nil {
			p.Name = *u.Name
		}
		if u.Description != nil {
			p.Description = *u.Description
		}
		p.UpdatedAt = now
		_, err = tx.ExecContext(ctx, `UPDATE projects SET name = $1, description = $2, updated_at = $3 WHERE id = $4`,
			p.Name, p.Description, formatTime(now), p.ID)
		if constraintOf(err) == uniqueViolation {
			return conflict("a project named %q already exists in this organization", p.Name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// DeleteProject removes a project. A project that still holds APIs, or the
// organization's last project, is ErrConflict. The APIs check is the foreign
// key itself, so an API created concurrently can never be orphaned.
func (db *DB) DeleteProject(ctx context.Context, orgID, id string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if _, err := findProject(ctx, tx, orgID, id); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM projects WHERE organization_id = $1`, orgID).Scan(&n); err != nil {
			return err
		}
		if n <= 1 {
			return conflict("project %s is the organization's last project and cannot be deleted", id)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM projects WHERE id = $1`, id)
		if constraintOf(err) == foreignKeyViolation {
			return conflict("project %s still holds APIs: delete them first", id)
		}
		return err
	})
}
