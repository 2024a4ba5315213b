package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// API keys of one API (contract §7). The store keeps the SHA-256 of a
// key's value (what gateways verify), never the value; the events that
// second-generation gateways must hear are recorded in the transaction
// that changes a key (consumers.go).

// Consumer event types of keys and applications.
const (
	EventAPIKeyCreated      = "apikey.created"
	EventAPIKeyUpdated      = "apikey.updated"
	EventAPIKeyRevoked      = "apikey.revoked"
	EventApplicationUpdated = "application.updated"
)

// Key statuses.
const (
	KeyActive  = "active"
	KeyExpired = "expired"
)

// ConsumerKey is an API key as the public API shows it.
type ConsumerKey struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	DisplayName    string     `json:"displayName"`
	APIID          string     `json:"apiId"`
	ApplicationID  *string    `json:"applicationId"`
	MaskedAPIKey   string     `json:"maskedApiKey"`
	Status         string     `json:"status"`
	ExpiresAt      *time.Time `json:"expiresAt"`
	CreatedAt      time.Time  `json:"createdAt"`
	UpdatedAt      time.Time  `json:"updatedAt"`
	LastRotatedAt  *time.Time `json:"lastRotatedAt"`
	OrganizationID string     `json:"-"`
	// Hash is the SHA-256 of the trimmed value, lower-case hex.
	Hash string `json:"-"`
	// CreatedBy is the creator's subject (gateways count keys per userId).
	CreatedBy string     `json:"-"`
	ExpiredAt *time.Time `json:"-"` // when its expiry was told to gateways
}

// active reports whether gateways hold the key at now.
func (k *ConsumerKey) active(now time.Time) bool {
	return k.ExpiresAt == nil || k.ExpiresAt.After(now)
}

// UserID is the envelope userId of the key's events: the creator and the
// key, so that one creator's many keys are all taken (a gateway refuses an
// eleventh active key of one userId on an API).
func (k *ConsumerKey) UserID() string {
	by := k.CreatedBy
	if by == "" {
		by = "platform-api"
	}
	return by + "/" + k.Name
}

// ConsumerKeyUpdate holds what a PUT changes; nil leaves a field alone.
// ExpiresAt or ApplicationID pointing at the zero value clears it.
type ConsumerKeyUpdate struct {
	DisplayName   *string
	ExpiresAt     *time.Time
	ApplicationID *string
}

const keyColumns = `id, organization_id, api_id, name, display_name, hash, masked, application_id, created_by,
	expires_at, expired_at, created_at, updated_at, last_rotated_at`

func scanKey(row rowScanner) (*ConsumerKey, error) {
	var k ConsumerKey
	var app sql.NullString
	err := row.Scan(&k.ID, &k.OrganizationID, &k.APIID, &k.Name, &k.DisplayName, &k.Hash, &k.MaskedAPIKey, &app,
		&k.CreatedBy, dbTimePtr{&k.ExpiresAt}, dbTimePtr{&k.ExpiredAt}, dbTime{&k.CreatedAt}, dbTime{&k.UpdatedAt},
		dbTimePtr{&k.LastRotatedAt})
	if app.Valid {
		k.ApplicationID = &app.String
	}
	return &k, err
}

func timeArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return formatTime(*t)
}

func strArg(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// withStatus sets the keys' statuses at now.
func withStatus(now time.Time, ks ...*ConsumerKey) {
	for _, k := range ks {
		k.Status = KeyActive
		if !k.active(now) {
			k.Status = KeyExpired
		}
	}
}

// CreateConsumerKey stores a new key of an API of the organization and
// records apikey.created (and the application.updated of its
// application). A name or value already used on the API is ErrConflict;
// an API of another organization ErrNotFound; an application that is not
// the organization's ErrInvalid.
func (db *DB) CreateConsumerKey(ctx context.Context, k *ConsumerKey) error {
	k.ID = newID()
	defer db.noteKeyExpiry(k.ExpiresAt)
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if _, err := findAPIRow(ctx, tx, k.OrganizationID, k.APIID); err != nil {
			return err
		}
		if err := checkApplication(ctx, tx, k.OrganizationID, k.ApplicationID); err != nil {
			return err
		}
		if err := keyClash(ctx, tx, k.APIID, k.ID, k.Name, k.Hash); err != nil {
			return err
		}
		k.CreatedAt, k.UpdatedAt = now, now
		_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (`+keyColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $11, NULL)`,
			k.ID, k.OrganizationID, k.APIID, k.Name, k.DisplayName, k.Hash, k.MaskedAPIKey, strArg(k.ApplicationID),
			k.CreatedBy, timeArg(k.ExpiresAt), formatTime(now))
		if constraintOf(err) == uniqueViolation {
			return conflict("an API key with this name or value already exists for this API")
		}
		if err != nil {
			return fmt.Errorf("create API key: %w", err)
		}
		withStatus(now, k)
		evs := []*ConsumerEvent{}
		if k.active(now) {
			ev, err := keyCreatedEvent(k)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		apps, err := applicationEvents(ctx, tx, k.OrganizationID, now, []string{k.APIID}, k.ApplicationID)
		if err != nil {
			return err
		}
		return tx.recordConsumer(ctx, now, append(evs, apps...)...)
	})
}

// keyClash refuses a name or a value (hash) another key of the API has.
func keyClash(ctx context.Context, tx *Tx, apiID, id, name, hash string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE api_id = $1 AND name = $2 AND id <> $3`,
		apiID, name, id).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return conflict("an API key named %q already exists for this API", name)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE api_id = $1 AND hash = $2 AND id <> $3`,
		apiID, hash, id).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return conflict("another API key of this API has this value: choose another")
	}
	return nil
}

// checkApplication refuses an application that is not the organization's.
func checkApplication(ctx context.Context, tx *Tx, orgID string, appID *string) error {
	if appID == nil {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM applications WHERE id = $1 AND organization_id = $2`,
		*appID, orgID).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return invalid("applicationId: application %s not found", *appID)
	}
	return nil
}

// ConsumerKeys lists an API's keys, newest first, and the total.
func (db *DB) ConsumerKeys(ctx context.Context, orgID, apiID string, page Page) ([]*ConsumerKey, int, error) {
	var list []*ConsumerKey
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE api_id = $1`, apiID).Scan(&total); err != nil {
			return err
		}
		var err error
		list, err = collect(scanKey)(tx.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE api_id = $1
			ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`, apiID, page.Limit, page.Offset))
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	withStatus(db.Now(), list...)
	return list, total, nil
}

// ConsumerKey returns one key of an API of the organization.
func (db *DB) ConsumerKey(ctx context.Context, orgID, apiID, name string) (*ConsumerKey, error) {
	var k *ConsumerKey
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		k, err = findKey(ctx, tx, orgID, apiID, name, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	withStatus(db.Now(), k)
	return k, nil
}

func findKey(ctx context.Context, tx *Tx, orgID, apiID, name string, lock bool) (*ConsumerKey, error) {
	if _, err := findAPIRow(ctx, tx, orgID, apiID); err != nil {
		return nil, err
	}
	q := `SELECT ` + keyColumns + ` FROM api_keys WHERE api_id = $1 AND name = $2`
	if lock {
		q += tx.forUpdate()
	}
	k, err := scanKey(tx.QueryRowContext(ctx, q, apiID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("API key %q not found for API %s", name, apiID)
	}
	if err != nil {
		return nil, fmt.Errorf("get API key: %w", err)
	}
	return k, nil
}

// RegenerateConsumerKey gives a key a new value (hash and mask) and
// records apikey.updated: the old value stops working on every gateway.
func (db *DB) RegenerateConsumerKey(ctx context.Context, orgID, apiID, name, hash, masked string) (*ConsumerKey, error) {
	var k *ConsumerKey
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var err error
		if k, err = findKey(ctx, tx, orgID, apiID, name, true); err != nil {
			return err
		}
		if err := keyClash(ctx, tx, apiID, k.ID, name, hash); err != nil {
			return err
		}
		k.Hash, k.MaskedAPIKey, k.UpdatedAt, k.LastRotatedAt = hash, masked, now, &now
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET hash = $1, masked = $2, updated_at = $3, last_rotated_at = $3
			WHERE id = $4`, hash, masked, formatTime(now), k.ID); err != nil {
			return fmt.Errorf("regenerate API key: %w", err)
		}
		withStatus(now, k)
		if !k.active(now) {
			return nil // not on gateways; a new expiresAt brings it back
		}
		ev, err := keyUpdatedEvent(k)
		if err != nil {
			return err
		}
		return tx.recordConsumer(ctx, now, ev)
	})
	return k, err
}

// UpdateConsumerKey changes a key's display name, expiry or application,
// and records what gateways must hear: apikey.updated for a new expiry
// (apikey.created when it brings back a key gateways were told expired),
// application.updated for the applications it leaves and joins.
func (db *DB) UpdateConsumerKey(ctx context.Context, orgID, apiID, name string, u ConsumerKeyUpdate) (*ConsumerKey, error) {
	var k *ConsumerKey
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var err error
		if k, err = findKey(ctx, tx, orgID, apiID, name, true); err != nil {
			return err
		}
		wasOnGateways := k.ExpiredAt == nil && k.active(now)
		oldApp := k.ApplicationID
		if u.DisplayName != nil {
			k.DisplayName = *u.DisplayName
		}
		expiryChanged := false
		if u.ExpiresAt != nil {
			old := k.ExpiresAt
			if u.ExpiresAt.IsZero() {
				k.ExpiresAt = nil
			} else {
				t := *u.ExpiresAt
				k.ExpiresAt = &t
			}
			expiryChanged = (old == nil) != (k.ExpiresAt == nil) || old != nil && !old.Equal(*k.ExpiresAt)
		}
		if u.ApplicationID != nil {
			if *u.ApplicationID == "" {
				k.ApplicationID = nil
			} else {
				app := *u.ApplicationID
				k.ApplicationID = &app
			}
			if err := checkApplication(ctx, tx, orgID, k.ApplicationID); err != nil {
				return err
			}
		}
		onGateways := k.active(now)
		if onGateways {
			k.ExpiredAt = nil
		}
		k.UpdatedAt = now
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET display_name = $1, expires_at = $2, application_id = $3,
			expired_at = $4, updated_at = $5 WHERE id = $6`, k.DisplayName, timeArg(k.ExpiresAt), strArg(k.ApplicationID),
			timeArg(k.ExpiredAt), formatTime(now), k.ID); err != nil {
			return fmt.Errorf("update API key: %w", err)
		}
		withStatus(now, k)
		var evs []*ConsumerEvent
		switch {
		case onGateways && !wasOnGateways:
			ev, err := keyCreatedEvent(k)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		case onGateways && expiryChanged:
			ev, err := keyUpdatedEvent(k)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		var apps []*string
		if !samePtr(oldApp, k.ApplicationID) || !onGateways && wasOnGateways || onGateways && !wasOnGateways {
			apps = append(apps, oldApp, k.ApplicationID)
		}
		appEvs, err := applicationEvents(ctx, tx, orgID, now, []string{apiID}, apps...)
		if err != nil {
			return err
		}
		return tx.recordConsumer(ctx, now, append(evs, appEvs...)...)
	})
	if err == nil {
		db.noteKeyExpiry(k.ExpiresAt)
	}
	return k, err
}

func samePtr(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// DeleteConsumerKey revokes a key: it is deleted and apikey.revoked
// recorded (and application.updated for its application).
func (db *DB) DeleteConsumerKey(ctx context.Context, orgID, apiID, name string) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		k, err := findKey(ctx, tx, orgID, apiID, name, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM api_keys WHERE id = $1`, k.ID); err != nil {
			return fmt.Errorf("revoke API key: %w", err)
		}
		evs := []*ConsumerEvent{}
		if k.ExpiredAt == nil {
			ev, err := keyRevokedEvent(k)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		apps, err := applicationEvents(ctx, tx, orgID, now, []string{apiID}, k.ApplicationID)
		if err != nil {
			return err
		}
		return tx.recordConsumer(ctx, now, append(evs, apps...)...)
	})
}

// ExpireConsumerKeys tells gateways of the keys whose expiry has passed
// (apikey.revoked), once: a key is marked when told, so that replicas
// doing this at the same time tell each key once. It returns how many it
// told and when the next key expires (zero: none waits).
func (db *DB) ExpireConsumerKeys(ctx context.Context) (int, time.Time, error) {
	var n int
	var next time.Time
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		n, next = 0, time.Time{}
		due, err := collect(scanKey)(tx.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys
			WHERE expired_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT 500`+tx.forUpdate(),
			formatTime(now)))
		if err != nil {
			return fmt.Errorf("expire API keys: %w", err)
		}
		var evs []*ConsumerEvent
		for _, k := range due {
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET expired_at = $1 WHERE id = $2 AND expired_at IS NULL`,
				formatTime(now), k.ID); err != nil {
				return err
			}
			ev, err := keyRevokedEvent(k)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
			apps, err := applicationEvents(ctx, tx, k.OrganizationID, now, []string{k.APIID}, k.ApplicationID)
			if err != nil {
				return err
			}
			evs = append(evs, apps...)
		}
		n = len(due)
		if n == 500 {
			next = now // more are due
		} else {
			var at *time.Time
			if err := tx.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM api_keys WHERE expired_at IS NULL
				AND expires_at IS NOT NULL`).Scan(dbTimePtr{&at}); err != nil {
				return err
			}
			if at != nil {
				next = *at
			}
		}
		return tx.recordConsumer(ctx, now, evs...)
	})
	return n, next, err
}

// GatewayConsumerKeys returns every active key of every API deployed to
// the gateway, oldest first.
func (db *DB) GatewayConsumerKeys(ctx context.Context, gatewayID string) ([]*ConsumerKey, error) {
	var list []*ConsumerKey
	now := db.Now()
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		list, err = collect(scanKey)(tx.QueryContext(ctx, `SELECT `+prefixed("k.", keyColumns)+` FROM api_keys k
			JOIN deployments d ON d.api_id = k.api_id AND d.gateway_id = $1 AND d.state = 'deployed'
			WHERE k.expires_at IS NULL OR k.expires_at > $2 ORDER BY k.created_at, k.id`, gatewayID, formatTime(now)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keys of a gateway: %w", err)
	}
	withStatus(now, list...)
	return list, nil
}

// prefixed qualifies each column of a column list.
func prefixed(p, columns string) string {
	out := []byte(p)
	for i := 0; i < len(columns); i++ {
		out = append(out, columns[i])
		if columns[i] == ',' {
			for i+1 < len(columns) && (columns[i+1] == ' ' || columns[i+1] == '\n' || columns[i+1] == '\t') {
				i++
			}
			out = append(out, ' ')
			out = append(out, p...)
		}
	}
	return string(out)
}

// Key events (contract §7). apiKeyHashes is a JSON-encoded string in
// events (an object in the pull).

type keyCreatedPayload struct {
	UUID         string  `json:"uuid"`
	APIID        string  `json:"apiId"`
	Name         string  `json:"name"`
	APIKeyHashes string  `json:"apiKeyHashes"`
	MaskedAPIKey string  `json:"maskedApiKey"`
	ExpiresAt    *string `json:"expiresAt,omitempty"`
	CreatedAt    string  `json:"createdAt"`
	UpdatedAt    string  `json:"updatedAt"`
}

type keyUpdatedPayload struct {
	APIID        string  `json:"apiId"`
	KeyName      string  `json:"keyName"`
	APIKeyHashes string  `json:"apiKeyHashes"`
	MaskedAPIKey string  `json:"maskedApiKey"`
	ExpiresAt    *string `json:"expiresAt,omitempty"`
	UpdatedAt    string  `json:"updatedAt"`
}

type keyRevokedPayload struct {
	APIID   string `json:"apiId"`
	KeyName string `json:"keyName"`
}

// KeyHashes is the apiKeyHashes object of a key.
func KeyHashes(hash string) map[string]string { return map[string]string{"sha256": hash} }

func hashesString(hash string) string {
	b, _ := marshalJSON(KeyHashes(hash))
	return string(b)
}

// RFC3339 formats a time as the wire does.
func RFC3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func rfcPtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := RFC3339(*t)
	return &s
}

func keyCreatedEvent(k *ConsumerKey) (*ConsumerEvent, error) {
	return NewConsumerEvent(EventAPIKeyCreated, k.OrganizationID, k.APIID, k.UserID(), keyCreatedPayload{UUID: k.ID,
		APIID: k.APIID, Name: k.Name, APIKeyHashes: hashesString(k.Hash), MaskedAPIKey: k.MaskedAPIKey,
		ExpiresAt: rfcPtr(k.ExpiresAt), CreatedAt: RFC3339(k.CreatedAt), UpdatedAt: RFC3339(k.UpdatedAt)})
}

func keyUpdatedEvent(k *ConsumerKey) (*ConsumerEvent, error) {
	return NewConsumerEvent(EventAPIKeyUpdated, k.OrganizationID, k.APIID, k.UserID(), keyUpdatedPayload{APIID: k.APIID,
		KeyName: k.Name, APIKeyHashes: hashesString(k.Hash), MaskedAPIKey: k.MaskedAPIKey,
		ExpiresAt: rfcPtr(k.ExpiresAt), UpdatedAt: RFC3339(k.UpdatedAt)})
}

func keyRevokedEvent(k *ConsumerKey) (*ConsumerEvent, error) {
	return NewConsumerEvent(EventAPIKeyRevoked, k.OrganizationID, k.APIID, k.UserID(),
		keyRevokedPayload{APIID: k.APIID, KeyName: k.Name})
}

// ConsumerKeySource is the keys' and applications' part of what follows an
// API onto second-generation gateways (fleet.ConsumerSource).
type ConsumerKeySource struct{ DB *DB }

// APIState is apikey.created for every active key of the API, then
// application.updated for the applications owning them.
func (s ConsumerKeySource) APIState(ctx context.Context, orgID, apiID string) ([]*ConsumerEvent, error) {
	var evs []*ConsumerEvent
	err := s.DB.readTx(ctx, func(tx *Tx) error {
		now := s.DB.Now()
		keys, err := collect(scanKey)(tx.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys
			WHERE api_id = $1 AND organization_id = $2 AND (expires_at IS NULL OR expires_at > $3)
			ORDER BY created_at, id`, apiID, orgID, formatTime(now)))
		if err != nil {
			return err
		}
		evs = make([]*ConsumerEvent, 0, len(keys))
		var apps []*string
		for _, k := range keys {
			ev, err := keyCreatedEvent(k)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
			if k.ApplicationID != nil {
				apps = append(apps, k.ApplicationID)
			}
		}
		appEvs, err := applicationStates(ctx, tx, orgID, now, apps...)
		evs = append(evs, appEvs...)
		return err
	})
	return evs, err
}

// appsOfGatewayQuery reads the applications with an active key on an API
// deployed to the gateway ($1, of organization $2; $3 is now), starting
// from the gateway: its deployments, their APIs' keys (by the API's
// index), so that its cost follows what is deployed to the gateway, not
// the organization's keys. SQLite joins CROSS JOINs in the order written
// (PostgreSQL plans them freely, from its statistics); the organization
// is checked on the gateway, since a filter on the keys' organization
// would offer SQLite the organization's index for them.
const appsOfGatewayQuery = `SELECT DISTINCT k.application_id
	FROM gateways g CROSS JOIN deployments d CROSS JOIN api_keys k
	WHERE g.id = $1 AND g.organization_id = $2
		AND d.gateway_id = g.id AND d.state = 'deployed'
		AND k.api_id = d.api_id AND k.application_id IS NOT NULL AND (k.expires_at IS NULL OR k.expires_at > $3)
	ORDER BY k.application_id`

// AfterKeysPulled is application.updated for every application with an
// active key on an API deployed to the gateway.
func (s ConsumerKeySource) AfterKeysPulled(ctx context.Context, orgID, gatewayID string) ([]*ConsumerEvent, error) {
	var evs []*ConsumerEvent
	err := s.DB.readTx(ctx, func(tx *Tx) error {
		now := s.DB.Now()
		ids, err := queryStrings(ctx, tx, appsOfGatewayQuery, gatewayID, orgID, formatTime(now))
		if err != nil {
			return err
		}
		apps := make([]*string, len(ids))
		for i := range ids {
			apps[i] = &ids[i]
		}
		evs, err = applicationStates(ctx, tx, orgID, now, apps...)
		return err
	})
	return evs, err
}

// sortedUnique returns the distinct non-nil values.
func sortedUnique(ps []*string) []string {
	var out []string
	for _, p := range ps {
		if p != nil && *p != "" {
			out = append(out, *p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// keysCheckEvery is how often the next key expiry is read from the
// database (keys created through other replicas); keys created here are
// noted at once.
const keysCheckEvery = time.Minute

// noteKeyExpiry notes that a key expires at t.
func (db *DB) noteKeyExpiry(t *time.Time) {
	if t == nil {
		return
	}
	db.fetchMu.Lock()
	if db.keysExpireAt.IsZero() || t.Before(db.keysExpireAt) {
		db.keysExpireAt = *t
	}
	db.fetchMu.Unlock()
}

// expireKeysDue tells gateways of the keys that expired (background work,
// Sync): when one is due as known here, and once a minute after reading
// when the next one is.
func (db *DB) expireKeysDue(ctx context.Context) error {
	now := time.Now() // the wall clock schedules; the transaction stamps with db.Now
	db.fetchMu.Lock()
	due := !db.keysExpireAt.IsZero() && !now.Before(db.keysExpireAt)
	check := !now.Before(db.keysCheckAt)
	if check {
		db.keysCheckAt = now.Add(keysCheckEvery)
	}
	db.fetchMu.Unlock()
	if !due && check {
		var at *time.Time
		if err := db.rstmts.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM api_keys WHERE expired_at IS NULL
			AND expires_at IS NOT NULL`).Scan(dbTimePtr{&at}); err != nil {
			return fmt.Errorf("next key expiry: %w", err)
		}
		due = at != nil && !now.Before(*at)
		db.noteKeyExpiry(at)
	}
	if !due {
		return nil
	}
	_, next, err := db.ExpireConsumerKeys(ctx)
	db.fetchMu.Lock()
	if err == nil {
		db.keysExpireAt = next
	}
	db.fetchMu.Unlock()
	return err
}
