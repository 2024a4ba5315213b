package store

// Secrets as resources (contract §7): named values of an organization that
// gateways need at run time, such as a backend credential. An API refers to
// one as {{ secret "name" }} in any string of its definition; the document
// a gateway downloads keeps the reference and the gateway pulls the value,
// which it may only do for a secret that an API deployed to it refers to.
// Values are sealed at rest (seal.go) and never answered by the public API.
//
// (The mTLS client keys sealed inside API definitions are another thing:
// see seal.go.)

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Secret is a secret of an organization. Value is set only in what
// gateways pull with values.
type Secret struct {
	ID             string    `json:"id"`
	OrganizationID string    `json:"-"`
	Name           string    `json:"name"`
	Description    string    `json:"description"`
	Hash           string    `json:"hash"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
	Value          string    `json:"-"`
	sealed         string
}

const secretColumns = `id, organization_id, name, description, value, hash, created_at, updated_at`

func scanSecret(row rowScanner) (*Secret, error) {
	var s Secret
	err := row.Scan(&s.ID, &s.OrganizationID, &s.Name, &s.Description, &s.sealed, &s.Hash,
		dbTime{&s.CreatedAt}, dbTime{&s.UpdatedAt})
	return &s, err
}

func secretAAD(id string) string { return "secret:" + id }

// setValue seals value into s and gives s a new hash: a digest of the
// sealed form (random for each write), so that it tells versions apart
// and reveals nothing of the value.
func (s *Secret) setValue(sealer *Sealer, value string) {
	s.sealed = sealer.seal(value, secretAAD(s.ID))
	sum := sha256.Sum256([]byte(s.sealed))
	s.Hash = hex.EncodeToString(sum[:])
}

// CreateSecret stores s (validated) with its value, sealed, and sets its
// id, hash and timestamps. A name in use in the organization is
// ErrConflict.
func (db *DB) CreateSecret(ctx context.Context, s *Secret, value string) error {
	s.ID = newID()
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		s.CreatedAt, s.UpdatedAt = now, now
		s.setValue(tx.sealer, value)
		_, err := tx.ExecContext(ctx, `INSERT INTO secrets (`+secretColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`,
			s.ID, s.OrganizationID, s.Name, s.Description, s.sealed, s.Hash, formatTime(now))
		switch constraintOf(err) {
		case uniqueViolation:
			return conflict("a secret named %q already exists in this organization", s.Name)
		case foreignKeyViolation:
			return invalid("organization %s is not registered: create it with POST /api/v1/organizations first", s.OrganizationID)
		}
		return err
	})
}

// Secrets lists the organization's secrets, newest first, and the total;
// values are not read.
func (db *DB) Secrets(ctx context.Context, orgID string, page Page) ([]*Secret, int, error) {
	list := []*Secret{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM secrets WHERE organization_id = $1`, orgID).Scan(&total); err != nil {
			return err
		}
		var err error
		list, err = collect(scanSecret)(tx.QueryContext(ctx, `SELECT `+secretColumns+` FROM secrets
			WHERE organization_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`, orgID, page.Limit, page.Offset))
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list secrets: %w", err)
	}
	return list, total, nil
}

// Secret returns one secret of the organization by name, without its
// value. One of another organization is ErrNotFound, like a missing one.
func (db *DB) Secret(ctx context.Context, orgID, name string) (*Secret, error) {
	return findSecret(ctx, db.rstmts, orgID, name)
}

func findSecret(ctx context.Context, q queryer, orgID, name string) (*Secret, error) {
	s, err := scanSecret(q.QueryRowContext(ctx, `SELECT `+secretColumns+` FROM secrets
		WHERE organization_id = $1 AND name = $2`, orgID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("secret %q not found", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get secret: %w", err)
	}
	return s, nil
}

// UpdateSecret sets a new value and/or description (nil leaves one alone)
// and returns the secret as stored, without its value.
func (db *DB) UpdateSecret(ctx context.Context, orgID, name string, value, description *string) (*Secret, error) {
	var s *Secret
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var err error
		if s, err = findSecret(ctx, tx, orgID, name); err != nil {
			return err
		}
		if err := tx.lockRow(ctx, "secrets", s.ID); err != nil {
			return err
		}
		if value != nil {
			s.setValue(tx.sealer, *value)
		}
		if description != nil {
			s.Description = *description
		}
		s.UpdatedAt = now
		_, err = tx.ExecContext(ctx, `UPDATE secrets SET value = $2, hash = $3, description = $4, updated_at = $5 WHERE id = $1`,
			s.ID, s.sealed, s.Hash, s.Description, formatTime(now))
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// DeleteSecret removes a secret of the organization. A secret that an API
// refers to, in its definition or in a revision deployed somewhere, is
// ErrConflict naming the APIs.
func (db *DB) DeleteSecret(ctx context.Context, orgID, name string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		s, err := findSecret(ctx, tx, orgID, name)
		if err != nil {
			return err
		}
		users, err := queryStrings(ctx, tx, `SELECT a.name || ' ' || a.version || ' (' || a.id || ')' FROM apis a
			WHERE a.organization_id = $1 AND (
				EXISTS (SELECT 1 FROM api_secret_refs r WHERE r.api_id = a.id AND r.name = $2)
				OR EXISTS (SELECT 1 FROM deployments d JOIN revision_secret_refs r ON r.revision_id = d.revision_id
					WHERE d.api_id = a.id AND d.state = $3 AND r.name = $2))
			ORDER BY a.name, a.version, a.id LIMIT 11`, orgID, name, StateDeployed)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return conflict("secret %q is referred to by %s: remove the references ({{ secret %q }}) and deploy again first",
				name, nameSome("API", users, 10), name)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM secrets WHERE id = $1`, s.ID)
		return err
	})
}

// GatewaySecrets returns the secrets of the organization that an API
// deployed to the gateway refers to (in its deployed revision), by name;
// with values opened when withValues, and only those updated after
// updatedAfter when it is not zero. This is what the gateway pulls.
func (db *DB) GatewaySecrets(ctx context.Context, gatewayID, orgID string, withValues bool, updatedAfter time.Time) ([]*Secret, error) {
	cond, args := ``, []any{orgID, gatewayID, StateDeployed}
	if !updatedAfter.IsZero() {
		cond, args = ` AND s.updated_at > $4`, append(args, formatTime(updatedAfter))
	}
	var list []*Secret
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		list, err = collect(scanSecret)(tx.QueryContext(ctx, `SELECT `+prefixed("s.", secretColumns)+` FROM secrets s
			WHERE s.organization_id = $1 AND s.name IN (SELECT r.name FROM deployments d
				JOIN revision_secret_refs r ON r.revision_id = d.revision_id WHERE d.gateway_id = $2 AND d.state = $3)`+cond+`
			ORDER BY s.name`, args...))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list the gateway's secrets: %w", err)
	}
	if withValues {
		for _, s := range list {
			if s.Value, err = db.sealer.open(s.sealed, secretAAD(s.ID)); err != nil {
				return nil, fmt.Errorf("secret %q: %w", s.Name, err)
			}
		}
	}
	return list, nil
}

// GatewaySecretValue returns the value of one secret that an API deployed
// to the gateway refers to; any other is ErrNotFound.
func (db *DB) GatewaySecretValue(ctx context.Context, gatewayID, orgID, name string) (string, error) {
	s, err := scanSecret(db.rstmts.QueryRowContext(ctx, `SELECT `+prefixed("s.", secretColumns)+` FROM secrets s
		WHERE s.organization_id = $1 AND s.name = $2 AND EXISTS (SELECT 1 FROM deployments d
			JOIN revision_secret_refs r ON r.revision_id = d.revision_id
			WHERE d.gateway_id = $3 AND d.state = $4 AND r.name = $2)`, orgID, name, gatewayID, StateDeployed))
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("secret %q not found, or no API deployed to this gateway refers to it", name)
	}
	if err != nil {
		return "", fmt.Errorf("get secret: %w", err)
	}
	v, err := db.sealer.open(s.sealed, secretAAD(s.ID))
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", name, err)
	}
	return v, nil
}

// secretRefPattern is a reference to a secret in a string of an API
// definition: {{ secret "name" }}.
var secretRefPattern = regexp.MustCompile(`\{\{\s*secret\s+"([^"]*)"\s*\}\}`)

// SecretRefs returns the names of the secrets a refers to, sorted, once
// each: every {{ secret "name" }} in any string of its definition (policy
// parameters included).
func SecretRefs(a *API) ([]string, error) {
	refs, err := secretRefs(a)
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(refs)), nil
}

// secretRefs maps each secret name a refers to to the path of the first
// field (in key order, as JSON names it) that refers to it.
func secretRefs(a *API) (map[string]string, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(string(b), "secret") { // most definitions: no need to look closer
		return nil, nil
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	refs := map[string]string{}
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch v := v.(type) {
		case string:
			for _, m := range secretRefPattern.FindAllStringSubmatch(v, -1) {
				if _, seen := refs[m[1]]; !seen {
					refs[m[1]] = path
				}
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s[%d]", path, i))
			}
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				p := k
				if path != "" {
					p = path + "." + k
				}
				walk(v[k], p)
			}
		}
	}
	walk(doc, "")
	return refs, nil
}

// setAPISecretRefs records the secrets the current definition of a refers
// to, replacing what was recorded (when replace).
func setAPISecretRefs(ctx context.Context, tx *Tx, a *API, replace bool) error {
	if replace {
		if _, err := tx.ExecContext(ctx, `DELETE FROM api_secret_refs WHERE api_id = $1`, a.ID); err != nil {
			return err
		}
	}
	return insertSecretRefs(ctx, tx, `INSERT INTO api_secret_refs (api_id, name) VALUES `, a.ID, a)
}

// setRevisionSecretRefs records the secrets a new revision refers to. A
// reference to a secret the organization does not hold is refused (400
// naming the secret and the field): a gateway could not resolve it.
func setRevisionSecretRefs(ctx context.Context, tx *Tx, rev *Revision) error {
	if err := checkSecretsExist(ctx, tx, rev.API); err != nil {
		return err
	}
	return insertSecretRefs(ctx, tx, `INSERT INTO revision_secret_refs (revision_id, name) VALUES `, rev.ID, rev.API)
}

func insertSecretRefs(ctx context.Context, tx *Tx, insert, owner string, a *API) error {
	names, err := SecretRefs(a)
	if err != nil || len(names) == 0 {
		return err
	}
	rows := make([][]any, len(names))
	for i, n := range names {
		rows[i] = []any{owner, n}
	}
	if err := insertRows(ctx, tx, insert, rows); err != nil {
		return fmt.Errorf("record secret references: %w", err)
	}
	return nil
}

// resealConsumerValues reseals, under the key that seals now, the secret
// values and subscription tokens sealed under an older key, in one
// transaction, at start (seal.go: rotation). It returns how many.
func (db *DB) resealConsumerValues(ctx context.Context) (int, error) {
	current := sealedPrefix + db.sealer.KeyID() + ":%"
	n := 0
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		n = 0
		for _, t := range []struct {
			table, column string
			aad           func(string) string
		}{{"secrets", "value", secretAAD}, {"subscriptions", "token", subscriptionAAD}} {
			rows, err := tx.QueryContext(ctx, `SELECT id, `+t.column+` FROM `+t.table+` WHERE `+t.column+` NOT LIKE $1`, current)
			if err != nil {
				return err
			}
			type row struct{ id, sealed string }
			var old []row
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.id, &r.sealed); err != nil {
					rows.Close()
					return err
				}
				old = append(old, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, r := range old {
				plain, err := tx.sealer.open(r.sealed, t.aad(r.id))
				if err != nil {
					return fmt.Errorf("%s %s: %w", t.table, r.id, err)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE `+t.table+` SET `+t.column+` = $1 WHERE id = $2`,
					tx.sealer.seal(plain, t.aad(r.id)), r.id); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

// checkSecretsExist refuses a definition that refers to a secret its
// organization does not hold, naming the first such secret and the field
// (a JSON path into the definition) that refers to it.
func checkSecretsExist(ctx context.Context, tx *Tx, a *API) error {
	refs, err := secretRefs(a)
	if err != nil {
		return err
	}
	for _, n := range slices.Sorted(maps.Keys(refs)) {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM secrets WHERE organization_id = $1 AND name = $2`, a.OrganizationID, n).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return invalid("%s: refers to the secret %q, which the organization does not hold; create it first (POST /api/v1/secrets)",
				refs[n], n)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
