package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Gateway token format: "gwt_" + the token's ID as 32 hex digits + "_" + the
// 32-byte secret in unpadded base64url (43 characters). Every character is
// header-safe. The ID makes verification one primary-key read plus one hash,
// whatever the number of gateways; the secret is never stored, only
// SHA-256(salt || secret) with a per-token random salt.
const (
	tokenPrefix    = "gwt_"
	tokenIDLen     = 32
	tokenSecretLen = 32
	tokenLen       = len(tokenPrefix) + tokenIDLen + 1 + 43
	// MaxActiveTokens is how many tokens a gateway may hold at once: one in
	// use and one being rolled out, so rotation needs no downtime.
	MaxActiveTokens = 2
	// lastUsedEvery coalesces lastUsedAt writes: a token verified many
	// times a minute costs one write a minute, not one per verification.
	lastUsedEvery = time.Minute
)

// IssuedToken is a new token with its only plain-text appearance.
type IssuedToken struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"createdAt"`
}

// TokenInfo describes a token without its secret or hash.
type TokenInfo struct {
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"createdAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
}

// GatewayIdentity is who a verified token speaks for.
type GatewayIdentity struct {
	GatewayID      string
	OrganizationID string
	TokenID        string
}

// ParseToken splits a token into its ID (canonical UUID form) and secret
// without touching the database. ok is false for anything malformed.
func ParseToken(tok string) (id string, secret []byte, ok bool) {
	if len(tok) != tokenLen || tok[:len(tokenPrefix)] != tokenPrefix || tok[len(tokenPrefix)+tokenIDLen] != '_' {
		return "", nil, false
	}
	h := tok[len(tokenPrefix) : len(tokenPrefix)+tokenIDLen]
	var raw [16]byte
	if n, err := hex.Decode(raw[:], []byte(h)); err != nil || n != 16 || h != hex.EncodeToString(raw[:]) {
		return "", nil, false
	}
	secret, err := base64.RawURLEncoding.Strict().DecodeString(tok[len(tokenPrefix)+tokenIDLen+1:])
	if err != nil || len(secret) != tokenSecretLen {
		return "", nil, false
	}
	// Concatenated, not formatted: every gateway request parses its token.
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], secret, true
}

func formatToken(id string, secret []byte) string {
	var h []byte
	for i := 0; i < len(id); i++ {
		if id[i] != '-' {
			h = append(h, id[i])
		}
	}
	return tokenPrefix + string(h) + "_" + base64.RawURLEncoding.EncodeToString(secret)
}

func hashSecret(salt, secret []byte) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write(secret)
	return h.Sum(nil)
}

// IssueToken creates a token for a gateway of the organization. A gateway
// that already has MaxActiveTokens active tokens is ErrConflict. The cap is
// the UNIQUE (gateway_id, active_slot) constraint: a token takes a free slot,
// and two writers racing for the same slot cannot both commit.
func (db *DB) IssueToken(ctx context.Context, orgID, gatewayID string) (*IssuedToken, error) {
	secret := make([]byte, tokenSecretLen)
	salt := make([]byte, 16)
	rand.Read(secret) // crypto/rand.Read never fails (Go 1.24+)
	rand.Read(salt)
	t := &IssuedToken{ID: newID()}
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		// Issues for one gateway take turns, so that two never pick the
		// same free slot (the UNIQUE constraint would refuse the second).
		if err := tx.lockRow(ctx, "gateways", gatewayID); err != nil {
			return err
		}
		if _, err := findGateway(ctx, tx, orgID, gatewayID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT active_slot FROM gateway_tokens
			WHERE gateway_id = $1 AND active_slot IS NOT NULL`, gatewayID)
		if err != nil {
			return err
		}
		used := map[int]bool{}
		for rows.Next() {
			var s int
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return err
			}
			used[s] = true
		}
		rows.Close()
		slot := 0
		for s := 1; s <= MaxActiveTokens; s++ {
			if !used[s] {
				slot = s
				break
			}
		}
		full := conflict("gateway %s already has %d active tokens: revoke one with DELETE /api/v1/gateways/%s/tokens/{tokenId} first",
			gatewayID, MaxActiveTokens, gatewayID)
		if slot == 0 {
			return full
		}
		t.CreatedAt = now
		_, err = tx.ExecContext(ctx, `INSERT INTO gateway_tokens (id, gateway_id, salt, hash, active_slot, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, t.ID, gatewayID, salt, hashSecret(salt, secret), slot, formatTime(now))
		if constraintOf(err) == uniqueViolation {
			return full
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	t.Token = formatToken(t.ID, secret)
	return t, nil
}

// RevokeToken revokes a token of a gateway of the organization. Revoking a
// revoked token succeeds (idempotent); an unknown token is ErrNotFound. The
// change (ChangeTokenRevoked) is published after the commit, so that the
// connections that used the token are closed.
func (db *DB) RevokeToken(ctx context.Context, orgID, gatewayID, tokenID string) (*Change, error) {
	var change *Change
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if _, err := findGateway(ctx, tx, orgID, gatewayID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE gateway_tokens SET active_slot = NULL,
			revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND gateway_id = $3`, formatTime(now), tokenID, gatewayID)
		if err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("token %s not found for gateway %s", tokenID, gatewayID)
		}
		change = tx.record(&Change{Kind: ChangeTokenRevoked, TokenID: tokenID, GatewayID: gatewayID})
		return nil
	})
	return change, err
}

// Tokens lists a gateway's tokens, newest first, and the total.
func (db *DB) Tokens(ctx context.Context, orgID, gatewayID string, page Page) ([]*TokenInfo, int, error) {
	list := []*TokenInfo{}
	var total int
	err := db.readTx(ctx, func(tx *Tx) error {
		if _, err := findGateway(ctx, tx, orgID, gatewayID); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM gateway_tokens WHERE gateway_id = $1`, gatewayID).Scan(&total); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, active_slot IS NOT NULL, created_at, revoked_at, last_used_at
			FROM gateway_tokens WHERE gateway_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`,
			gatewayID, page.Limit, page.Offset)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t TokenInfo
			var active bool
			if err := rows.Scan(&t.ID, &active, dbTime{&t.CreatedAt}, dbTimePtr{&t.RevokedAt}, dbTimePtr{&t.LastUsedAt}); err != nil {
				return err
			}
			t.Status = "revoked"
			if active {
				t.Status = "active"
			}
			list = append(list, &t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list tokens: %w", err)
	}
	return list, total, nil
}

// VerifyToken checks a gateway token: a malformed one is refused before any
// query; otherwise it is one primary-key read and one hash, compared in
// constant time. Unknown, revoked and deleted-gateway tokens are ErrBadToken.
// It records lastUsedAt at most once per lastUsedEvery per token.
func (db *DB) VerifyToken(ctx context.Context, tok string) (*GatewayIdentity, error) {
	bad := &Error{kind: ErrBadToken, msg: "the api-key header does not hold a valid gateway token"}
	id, secret, ok := ParseToken(tok)
	if !ok {
		return nil, bad
	}
	if ident, ok := db.tokens.get(id, secret, db.clock()); ok {
		return ident, nil
	}
	epoch := db.tokens.begin()
	var salt, hash []byte
	var lastUsed *time.Time
	ident := &GatewayIdentity{TokenID: id}
	err := db.rstmts.QueryRowContext(ctx, `SELECT t.salt, t.hash, t.last_used_at, g.id, g.organization_id
		FROM gateway_tokens t JOIN gateways g ON g.id = t.gateway_id
		WHERE t.id = $1 AND t.active_slot IS NOT NULL`, id).
		Scan(&salt, &hash, dbTimePtr{&lastUsed}, &ident.GatewayID, &ident.OrganizationID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, bad
	}
	if err != nil {
		return nil, db.unavailable(ctx, fmt.Errorf("verify token: %w", err))
	}
	if subtle.ConstantTimeCompare(hashSecret(salt, secret), hash) != 1 {
		return nil, bad
	}
	now := db.clock().UTC() // the database's clock: last_used_at feeds a gateway's lastSeen
	if lastUsed == nil || now.Sub(*lastUsed) >= lastUsedEvery {
		// Best effort: a failed write must not fail the verification.
		db.wstmts.ExecContext(ctx, `UPDATE gateway_tokens SET last_used_at = $1 WHERE id = $2`, formatTime(now), id)
	}
	db.tokens.put(epoch, id, secret, *ident, now)
	return ident, nil
}

// ActiveTokens returns which of the given token ids are still active for a
// gateway that still exists: what a replica asks about its live
// connections after it may have missed revocations and deletions (a lost
// listener).
func (db *DB) ActiveTokens(ctx context.Context, tokenIDs []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(tokenIDs) == 0 {
		return out, nil
	}
	err := db.readTx(ctx, func(tx *Tx) error {
		var err error
		out, err = idSet(ctx, tx, tokenIDs, nil, func(in string) string {
			return `SELECT t.id FROM gateway_tokens t JOIN gateways g ON g.id = t.gateway_id
				WHERE t.active_slot IS NOT NULL AND t.id IN (` + in + `)`
		})
		return err
	})
	return out, err
}
