package store

// Secrets at rest. The secret fields of an API definition (the mTLS client
// keys, of the API and of each backend endpoint) are stored sealed with
// AES-256-GCM under a key kept outside the database, bound to their API by
// the additional data, and stay sealed in memory: the public API only ever
// shows a mask, and a kept secret is kept as its sealed form. They are
// opened for one purpose, rendering the document a gateway downloads
// (OpenSecrets).
//
// The key file holds one base64 key of 32 bytes per line; the first seals,
// all of them open. To rotate, put a new key on the first line and restart
// (every replica, with the same file): the store reseals every secret under
// the new key at start, after which the old line may be removed.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// sealedPrefix starts every sealed value: "enc:v1:<key id>:<base64url of
// nonce and ciphertext>".
const sealedPrefix = "enc:v1:"

// IsSealed reports whether v is a sealed value.
func IsSealed(v string) bool { return strings.HasPrefix(v, sealedPrefix) }

// Sealer seals and opens secrets.
type Sealer struct {
	keys []sealKey // keys[0] seals
}

type sealKey struct {
	id   string // first 8 hex digits of the key's SHA-256
	aead cipher.AEAD
}

// NewSealer makes a sealer from 32-byte keys; the first one seals.
func NewSealer(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("no encryption key")
	}
	s := &Sealer{}
	for i, k := range keys {
		if len(k) != 32 {
			return nil, fmt.Errorf("encryption key %d is %d bytes, want 32", i+1, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(k)
		s.keys = append(s.keys, sealKey{id: hex.EncodeToString(sum[:4]), aead: aead})
	}
	return s, nil
}

// KeyID is the id of the key that seals.
func (s *Sealer) KeyID() string { return s.keys[0].id }

// LoadOrCreateKeyFile reads the key file at path, or creates it (mode 0600)
// holding one new random key. created tells which.
func LoadOrCreateKeyFile(path string) (s *Sealer, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		rand.Read(key)
		line := "# platform-api encryption keys: the first line seals, every line opens. Keep a copy.\n" +
			base64.StdEncoding.EncodeToString(key) + "\n"
		// Written aside, then linked into place: processes starting at once
		// on one key file agree on the first key linked, and none reads a
		// half-written file.
		f, err := os.CreateTemp(filepath.Dir(path), ".encryption-key-*")
		if err != nil {
			return nil, false, err
		}
		defer os.Remove(f.Name())
		_, err = f.WriteString(line)
		if err = errors.Join(err, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
			return nil, false, err
		}
		if err := os.Link(f.Name(), path); errors.Is(err, os.ErrExist) {
			return LoadOrCreateKeyFile(path) // another process made it first
		} else if err != nil {
			return nil, false, err
		}
		s, err := NewSealer(key)
		return s, true, err
	}
	if err != nil {
		return nil, false, err
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(k) != 32 {
			return nil, false, fmt.Errorf("%s line %d: want a base64 key of 32 bytes", path, n)
		}
		keys = append(keys, k)
	}
	s, err = NewSealer(keys...)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return s, false, nil
}

// seal seals plain for the API apiID.
func (s *Sealer) seal(plain, apiID string) string {
	k := s.keys[0]
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	rand.Read(nonce)
	out := k.aead.Seal(nonce, nonce, []byte(plain), []byte(apiID))
	return sealedPrefix + k.id + ":" + base64.RawURLEncoding.EncodeToString(out)
}

// open opens a sealed value of the API apiID.
func (s *Sealer) open(sealed, apiID string) (string, error) {
	id, b64, ok := strings.Cut(strings.TrimPrefix(sealed, sealedPrefix), ":")
	if !ok || !IsSealed(sealed) {
		return "", errors.New("not a sealed value")
	}
	for _, k := range s.keys {
		if k.id != id {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(b64)
		if err != nil || len(raw) < k.aead.NonceSize() {
			return "", errors.New("sealed value is damaged")
		}
		plain, err := k.aead.Open(nil, raw[:k.aead.NonceSize()], raw[k.aead.NonceSize():], []byte(apiID))
		if err != nil {
			return "", errors.New("sealed value does not open (damaged, or sealed for another API)")
		}
		return string(plain), nil
	}
	return "", fmt.Errorf("secret sealed with key %s, which is not in the encryption key file", id)
}

// SecretFields returns pointers to the secret fields of a.
func SecretFields(a *API) []*string {
	var out []*string
	if a.MTLS != nil {
		out = append(out, &a.MTLS.ClientKey)
	}
	for i := range a.BackendServices {
		out = append(out, backendSecrets(&a.BackendServices[i])...)
	}
	return out
}

func backendSecrets(b *BackendService) []*string {
	var out []*string
	for j := range b.Endpoints {
		if m := b.Endpoints[j].MTLS; m != nil {
			out = append(out, &m.ClientKey)
		}
	}
	return out
}

// sealSecrets seals, in place, every secret of a not sealed yet, or sealed
// under a key that no longer seals. It reports whether it changed any.
func (s *Sealer) sealSecrets(a *API) (bool, error) {
	changed := false
	for _, f := range SecretFields(a) {
		switch {
		case *f == "":
		case !IsSealed(*f):
			*f, changed = s.seal(*f, a.ID), true
		case !strings.HasPrefix(*f, sealedPrefix+s.KeyID()+":"):
			plain, err := s.open(*f, a.ID)
			if err != nil {
				return false, err
			}
			*f, changed = s.seal(plain, a.ID), true
		}
	}
	return changed, nil
}

// OpenSecrets opens, in place, the sealed secrets of a: a definition the
// caller owns, about to be rendered for a gateway it is deployed to.
func (db *DB) OpenSecrets(a *API) error {
	for _, f := range SecretFields(a) {
		if IsSealed(*f) {
			plain, err := db.sealer.open(*f, a.ID)
			if err != nil {
				return fmt.Errorf("API %s: %w", a.ID, err)
			}
			*f = plain
		}
	}
	return nil
}

// resealAll seals every stored secret that is in clear (written by a
// version before secrets were sealed) or sealed under an older key, in
// one transaction. It runs at start.
func (db *DB) resealAll(ctx context.Context) (int, error) {
	n := 0
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		n = 0
		// Only rows that hold a client key need a look: few, in practice.
		list, err := queryAPIs(ctx, tx, `WHERE settings LIKE '%"clientKey"%'
			OR id IN (SELECT api_id FROM api_backend_services WHERE config LIKE '%"clientKey"%')`)
		if err != nil {
			return err
		}
		for _, a := range list {
			changed, err := db.sealer.sealSecrets(a)
			if err != nil {
				return err
			}
			if !changed {
				continue
			}
			n++
			settings, err := settingsJSON(a)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE apis SET settings = $1 WHERE id = $2`, settings, a.ID); err != nil {
				return err
			}
			for i := range a.BackendServices {
				cfg, err := marshalJSON(a.BackendServices[i])
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE api_backend_services SET config = $1 WHERE api_id = $2 AND position = $3`,
					string(cfg), a.ID, i); err != nil {
					return err
				}
			}
		}
		revs, err := tx.QueryContext(ctx, `SELECT id, definition FROM api_revisions WHERE definition LIKE '%"clientKey"%'`)
		if err != nil {
			return err
		}
		type update struct{ id, def string }
		var updates []update
		for revs.Next() {
			var id, def string
			if err := revs.Scan(&id, &def); err != nil {
				revs.Close()
				return err
			}
			var a API
			if err := json.Unmarshal([]byte(def), &a); err != nil {
				revs.Close()
				return fmt.Errorf("revision %s: %w", id, err)
			}
			changed, err := db.sealer.sealSecrets(&a)
			if err != nil {
				revs.Close()
				return fmt.Errorf("revision %s: %w", id, err)
			}
			if changed {
				b, err := marshalJSON(&a)
				if err != nil {
					revs.Close()
					return err
				}
				updates = append(updates, update{id, string(b)})
			}
		}
		revs.Close()
		if err := revs.Err(); err != nil {
			return err
		}
		for _, u := range updates {
			if _, err := tx.ExecContext(ctx, `UPDATE api_revisions SET definition = $1 WHERE id = $2`, u.def, u.id); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// checkSealingKey refuses a sealer whose keys do not include the one the
// database's secrets are sealed with (a replica started with another key
// file would seal what the others cannot open), and records the key that
// seals from now on.
func (db *DB) checkSealingKey(ctx context.Context) error {
	return db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		var stored string
		err := tx.QueryRowContext(ctx, `SELECT key_id FROM sealing_key WHERE one = 1`).Scan(&stored)
		if err == nil {
			known := false
			for _, k := range db.sealer.keys {
				known = known || k.id == stored
			}
			if !known {
				return fmt.Errorf("this database's secrets are sealed with key %s, which is not in the encryption key file (key %s): give every replica the same PLATFORM_ENCRYPTION_KEY_FILE", stored, db.sealer.KeyID())
			}
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sealing_key (one, key_id) VALUES (1, $1)
			ON CONFLICT (one) DO UPDATE SET key_id = excluded.key_id`, db.sealer.KeyID())
		return err
	})
}
