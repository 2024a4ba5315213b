package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Application is who calls APIs; it owns keys (contract §7).
type Application struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	DisplayName    string    `json:"displayName"`
	Description    string    `json:"description"`
	ProjectID      *string   `json:"projectId"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
	OrganizationID string    `json:"-"`
}

// ApplicationUpdate holds what a PUT changes; nil leaves a field alone, a
// ProjectID pointing at "" clears it.
type ApplicationUpdate struct {
	Name, DisplayName, Description, ProjectID *string
}

const applicationColumns = `id, organization_id, project_id, name, display_name, description, created_at, updated_at`

func scanApplication(row rowScanner) (*Application, error) {
	var a Application
	var project sql.NullString
	err := row.Scan(&a.ID, &a.OrganizationID, &project, &a.Name, &a.DisplayName, &a.Description,
		dbTime{&a.CreatedAt}, dbTime{&a.UpdatedAt})
	if project.Valid {
		a.ProjectID = &project.String
	}
	return &a, err
}

// CreateApplication stores a new application. A name in use in the
// organization is ErrConflict; a project that is not the organization's
// ErrInvalid.
func (db *DB) CreateApplication(ctx context.Context, a *Application) error {
	a.ID = newID()
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := checkProject(ctx, tx, a.OrganizationID, a.ProjectID); err != nil {
			return err
		}
		a.CreatedAt, a.UpdatedAt = now, now
		_, err := tx.ExecContext(ctx, `INSERT INTO applications (`+applicationColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`, a.ID, a.OrganizationID, strArg(a.ProjectID), a.Name, a.DisplayName,
			a.Description, formatTime(now))
		switch constraintOf(err) {
		case uniqueViolation:
			return conflict("an application named %q already exists in this organization", a.Name)
		case foreignKeyViolation:
			return invalid("organization %s is not registered: create it with POST /api/v1/organizations first", a.OrganizationID)
		}
		if err != nil {
			return fmt.Errorf("create application: %w", err)
		}
		return nil
	})
}

func checkProject(ctx context.Context, tx *Tx, orgID string, projectID *string) error {
	if projectID == nil {
		return nil
	}
	if _, err := findProject(ctx, tx, orgID, *projectID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return invalid("projectId: project %s not found", *projectID)
		}
		return err
	}
	return nil
}

// Applications lists the organization's applications (of one project when
// projectID is set), newest first, and the total.
func (db *DB) Applications(ctx context.Context, orgID, projectID string, page Page) ([]*Application, int, error) {
	var list []*Application
	var total int
	where, args := `organization_id = $1`, []any{orgID}
	if projectID != "" {
		where, args = where+` AND project_id = $2`, append(args, projectID)
	}
	n := len(args)
	err := db.readTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM applications WHERE `+where, args...).Scan(&total); err != nil {
			return err
		}
		var err error
		list, err = collect(scanApplication)(tx.QueryContext(ctx, `SELECT `+applicationColumns+` FROM applications WHERE `+where+
			fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT $%d OFFSET $%d`, n+1, n+2), append(args, page.Limit, page.Offset)...))
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list applications: %w", err)
	}
	return list, total, nil
}

// Application returns one application of the organization.
func (db *DB) Application(ctx context.Context, orgID, id string) (*Application, error) {
	var a *Application
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		a, err = findApplication(ctx, tx, orgID, id, false)
		return err
	})
	return a, err
}

func findApplication(ctx context.Context, tx *Tx, orgID, id string, lock bool) (*Application, error) {
	q := `SELECT ` + applicationColumns + ` FROM applications WHERE id = $1 AND organization_id = $2`
	if lock {
		q += tx.forUpdate()
	}
	a, err := scanApplication(tx.QueryRowContext(ctx, q, id, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("application %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get application: %w", err)
	}
	return a, nil
}

// UpdateApplication changes the fields set in u; a new name or display
// name is told to gateways (application.updated).
func (db *DB) UpdateApplication(ctx context.Context, orgID, id string, u ApplicationUpdate) (*Application, error) {
	var a *Application
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var err error
		if a, err = findApplication(ctx, tx, orgID, id, true); err != nil {
			return err
		}
		renamed := u.Name != nil && *u.Name != a.Name || u.DisplayName != nil && *u.DisplayName != a.DisplayName
		if u.Name != nil {
			a.Name = *u.Name
		}
		if u.DisplayName != nil {
			a.DisplayName = *u.DisplayName
		}
		if u.Description != nil {
			a.Description = *u.Description
		}
		if u.ProjectID != nil {
			a.ProjectID = u.ProjectID
			if *u.ProjectID == "" {
				a.ProjectID = nil
			}
			if err := checkProject(ctx, tx, orgID, a.ProjectID); err != nil {
				return err
			}
		}
		a.UpdatedAt = now
		_, err = tx.ExecContext(ctx, `UPDATE applications SET name = $1, display_name = $2, description = $3,
			project_id = $4, updated_at = $5 WHERE id = $6`, a.Name, a.DisplayName, a.Description, strArg(a.ProjectID),
			formatTime(now), a.ID)
		if constraintOf(err) == uniqueViolation {
			return conflict("an application named %q already exists in this organization", a.Name)
		}
		if err != nil {
			return fmt.Errorf("update application: %w", err)
		}
		if !renamed {
			return nil
		}
		evs, err := applicationEvents(ctx, tx, orgID, now, nil, &a.ID)
		if err != nil {
			return err
		}
		return tx.recordConsumer(ctx, now, evs...)
	})
	return a, err
}

// DeleteApplication deletes an application; its keys stay valid, detached,
// and gateways are told it maps no key any more (application.updated with
// an empty set).
func (db *DB) DeleteApplication(ctx context.Context, orgID, id string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		a, err := findApplication(ctx, tx, orgID, id, true)
		if err != nil {
			return err
		}
		targets, err := applicationTargets(ctx, tx, id, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET application_id = NULL WHERE application_id = $1`, id); err != nil {
			return fmt.Errorf("detach keys: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM applications WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete application: %w", err)
		}
		if err := deleteApplicationSubscriptions(ctx, tx, now, orgID, id); err != nil {
			return err
		}
		ev, err := applicationEvent(a, []string{})
		if err != nil {
			return err
		}
		ev.Gateways = targets
		return tx.recordConsumer(ctx, now, ev)
	})
}

type applicationPayload struct {
	ApplicationID   string       `json:"applicationId"`
	ApplicationUUID string       `json:"applicationUuid"`
	ApplicationName string       `json:"applicationName"`
	ApplicationType string       `json:"applicationType"`
	Mappings        []keyMapping `json:"mappings"`
}

type keyMapping struct {
	APIKeyUUID string `json:"apiKeyUuid"`
}

// applicationEvent is application.updated for a with the keys given.
func applicationEvent(a *Application, keys []string) (*ConsumerEvent, error) {
	name := a.DisplayName
	if name == "" {
		name = a.Name
	}
	m := make([]keyMapping, len(keys))
	for i, k := range keys {
		m[i] = keyMapping{APIKeyUUID: k}
	}
	return NewConsumerEvent(EventApplicationUpdated, a.OrganizationID, "", "", applicationPayload{ApplicationID: a.Name,
		ApplicationUUID: a.ID, ApplicationName: name, ApplicationType: "web", Mappings: m})
}

// applicationEvents is application.updated, with its complete set of
// active keys, for each application named (nil and repeats skipped), sent
// to the gateways its keys' APIs are deployed to and those of extraAPIs
// (APIs it may have just lost a key of).
func applicationEvents(ctx context.Context, tx *Tx, orgID string, now time.Time, extraAPIs []string, apps ...*string) ([]*ConsumerEvent, error) {
	return appEvents(ctx, tx, orgID, now, true, extraAPIs, apps)
}

// applicationStates is applicationEvents for a snapshot, which goes to one
// connection: without targets, whose read grows with the gateways the
// application's APIs are deployed to.
func applicationStates(ctx context.Context, tx *Tx, orgID string, now time.Time, apps ...*string) ([]*ConsumerEvent, error) {
	return appEvents(ctx, tx, orgID, now, false, nil, apps)
}

func appEvents(ctx context.Context, tx *Tx, orgID string, now time.Time, targets bool, extraAPIs []string, apps []*string) ([]*ConsumerEvent, error) {
	var evs []*ConsumerEvent
	for _, id := range sortedUnique(apps) {
		a, err := findApplication(ctx, tx, orgID, id, false)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		keys, err := queryStrings(ctx, tx, `SELECT id FROM api_keys WHERE application_id = $1
			AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at, id`, id, formatTime(now))
		if err != nil {
			return nil, err
		}
		ev, err := applicationEvent(a, append([]string{}, keys...))
		if err != nil {
			return nil, err
		}
		if targets {
			if ev.Gateways, err = applicationTargets(ctx, tx, id, extraAPIs); err != nil {
				return nil, err
			}
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// applicationTargets are the gateways the APIs of the application's keys,
// and extraAPIs, are deployed to.
func applicationTargets(ctx context.Context, tx *Tx, appID string, extraAPIs []string) ([]string, error) {
	gws, err := queryStrings(ctx, tx, `SELECT DISTINCT d.gateway_id FROM deployments d
		JOIN api_keys k ON k.api_id = d.api_id WHERE k.application_id = $1 AND d.state = 'deployed'`, appID)
	if err != nil {
		return nil, err
	}
	for _, api := range extraAPIs {
		more, err := queryStrings(ctx, tx, `SELECT gateway_id FROM deployments WHERE api_id = $1 AND state = 'deployed'`, api)
		if err != nil {
			return nil, err
		}
		gws = append(gws, more...)
	}
	out := sortedUnique(ptrs(gws))
	if out == nil {
		out = []string{}
	}
	return out, nil
}

func ptrs(ss []string) []*string {
	out := make([]*string, len(ss))
	for i := range ss {
		out[i] = &ss[i]
	}
	return out
}
