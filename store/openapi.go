package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// OpenAPIDocument is the OpenAPI document kept with an API or a revision,
// exactly as it was sent, with its content type.
type OpenAPIDocument struct {
	ContentType string
	Document    []byte
}

// CreateAPIWithOpenAPI is CreateAPI that keeps the document the API was
// imported from, in the same transaction.
func (db *DB) CreateAPIWithOpenAPI(ctx context.Context, a *API, doc *OpenAPIDocument) (*API, error) {
	a.ID = newID()
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := insertAPI(ctx, tx, a, now); err != nil {
			return err
		}
		return putOpenAPI(ctx, tx, a.ID, doc, now)
	})
	if err != nil {
		return nil, err
	}
	return asStored(a), nil
}

// UpdateAPIWithOpenAPI is UpdateAPI that replaces the kept document in the
// same transaction.
func (db *DB) UpdateAPIWithOpenAPI(ctx context.Context, orgID, id string, doc *OpenAPIDocument, change func(*API) error) (*API, error) {
	return db.updateAPI(ctx, orgID, id, change, func(ctx context.Context, tx *Tx, now time.Time) error {
		return putOpenAPI(ctx, tx, id, doc, now)
	})
}

func putOpenAPI(ctx context.Context, tx *Tx, apiID string, doc *OpenAPIDocument, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM api_openapi_documents WHERE api_id = $1`, apiID); err != nil {
		return fmt.Errorf("replace openapi document: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO api_openapi_documents (api_id, content_type, document, updated_at)
		VALUES ($1, $2, $3, $4)`, apiID, doc.ContentType, string(doc.Document), formatTime(now))
	if err != nil {
		return fmt.Errorf("insert openapi document: %w", err)
	}
	return nil
}

// copyOpenAPIToRevision keeps, with a new revision, the API's document as
// it is now (nothing when the API has none).
func copyOpenAPIToRevision(ctx context.Context, tx *Tx, apiID, revisionID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO api_revision_openapi_documents (revision_id, content_type, document)
		SELECT $1, content_type, document FROM api_openapi_documents WHERE api_id = $2`, revisionID, apiID)
	if err != nil {
		return fmt.Errorf("keep openapi document with revision: %w", err)
	}
	return nil
}

// OpenAPI returns the API of the organization and its kept document, or,
// with revisionID set, that revision's definition and document. The
// document is nil when there is none (the API was made without one). An
// API of another organization is ErrNotFound, exactly like a missing one.
func (db *DB) OpenAPI(ctx context.Context, orgID, apiID, revisionID string) (*API, *OpenAPIDocument, error) {
	var a *API
	var doc *OpenAPIDocument
	err := db.readTx(ctx, func(tx *Tx) error {
		list, err := queryAPIs(ctx, tx, `WHERE id = $1 AND organization_id = $2`, apiID, orgID)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("API %s not found", apiID)
		}
		a = list[0]
		query, arg := `SELECT content_type, document FROM api_openapi_documents WHERE api_id = $1`, apiID
		if revisionID != "" {
			rev, err := findRevision(ctx, tx, apiID, revisionID)
			if err != nil {
				return err
			}
			a = rev.API
			query, arg = `SELECT content_type, document FROM api_revision_openapi_documents WHERE revision_id = $1`, revisionID
		}
		var d OpenAPIDocument
		var text string
		err = tx.QueryRowContext(ctx, query, arg).Scan(&d.ContentType, &text)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		d.Document = []byte(text)
		doc = &d
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return a, doc, nil
}
