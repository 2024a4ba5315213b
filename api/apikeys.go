package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"time"

	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/store"
)

// API keys of one API (contract §7): the plain value is in the answer to a
// create or a regenerate only; the store keeps its SHA-256, and nothing
// logs either.

// keyPrefix starts every generated key, so that one is recognised (in a
// leak scan, a log) for what it is.
const keyPrefix = "pak_"

// Bounds of a caller-supplied key value.
const (
	minSuppliedKey = 32
	maxSuppliedKey = 512
)

// nameRE is the rule of consumer resource names (handles), 3-63
// characters.
var nameRE = regexp.MustCompile(`^[a-z0-9]+([_-][a-z0-9]+)*$`)

// checkName checks a handle.
func checkName(errs *httpx.FieldErrors, path, v string) {
	if len(v) < 3 || len(v) > 63 || !nameRE.MatchString(v) {
		errs.Add(path, "must be 3 to 63 characters of lower-case letters and digits, single '-' or '_' between them, not %q", clip(v))
	}
}

func clip(s string) string {
	if len(s) > 70 {
		return s[:70] + "…"
	}
	return s
}

// nameFrom derives a handle from a display name ("" when none fits).
func nameFrom(display string) string {
	var b strings.Builder
	sep := false
	for _, r := range strings.ToLower(display) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			if sep && b.Len() > 0 {
				b.WriteByte('-')
			}
			sep = false
			b.WriteRune(r)
		default:
			sep = true
		}
		if b.Len() >= 63 {
			break
		}
	}
	s := strings.TrimRight(b.String()[:min(b.Len(), 63)], "-")
	if len(s) < 3 || !nameRE.MatchString(s) {
		return ""
	}
	return s
}

// randomName is a generated handle.
func randomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// generateKey returns a new key value: 256 random bits, URL-safe.
func generateKey() string {
	var b [32]byte
	rand.Read(b[:])
	return keyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// hashKey is what gateways verify: the SHA-256 of the trimmed value,
// lower-case hex.
func hashKey(v string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(v)))
	return hex.EncodeToString(sum[:])
}

// maskKey shows only the last 4 characters.
func maskKey(v string) string {
	v = strings.TrimSpace(v)
	return "********" + v[max(0, len(v)-4):]
}

// checkKeyValue checks a caller-supplied value: at least 32 printable
// ASCII characters without spaces. The value itself is never repeated.
func checkKeyValue(errs *httpx.FieldErrors, path, v string) {
	if len(v) < minSuppliedKey || len(v) > maxSuppliedKey {
		errs.Add(path, "must be %d to %d characters (it has %d)", minSuppliedKey, maxSuppliedKey, len(v))
		return
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			errs.Add(path, "must be printable ASCII without spaces (character %d is not)", i+1)
			return
		}
	}
}

// parseExpiry reads an expiresAt that must be in the future.
func parseExpiry(errs *httpx.FieldErrors, v string, now time.Time) *time.Time {
	t, err := time.Parse(time.RFC3339Nano, v)
	switch {
	case err != nil:
		errs.Add("expiresAt", "must be an RFC 3339 time such as 2030-01-02T15:04:05Z, not %q", clip(v))
		return nil
	case !t.After(now):
		errs.Add("expiresAt", "must be in the future")
		return nil
	}
	t = t.UTC().Truncate(time.Microsecond)
	return &t
}

type keyRequest struct {
	Name          *string `json:"name"`
	DisplayName   *string `json:"displayName"`
	APIKey        *string `json:"apiKey"`
	ExpiresAt     *string `json:"expiresAt"`
	ApplicationID *string `json:"applicationId"`

	creating  bool
	expiresAt *time.Time
}

func (k *keyRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	if k.Name != nil {
		if !k.creating {
			errs.Add("name", "cannot be changed: create a key under the new name and revoke this one")
		} else {
			checkName(&errs, "name", *k.Name)
		}
	}
	if k.DisplayName != nil {
		httpx.CheckText(&errs, "displayName", *k.DisplayName, false, 100)
	}
	if k.APIKey != nil {
		if !k.creating {
			errs.Add("apiKey", "cannot be set by an update: use POST …/regenerate")
		} else {
			checkKeyValue(&errs, "apiKey", *k.APIKey)
		}
	}
	if k.ExpiresAt != nil && (k.creating || *k.ExpiresAt != "") {
		k.expiresAt = parseExpiry(&errs, *k.ExpiresAt, time.Now())
	}
	if k.ApplicationID != nil && (k.creating || *k.ApplicationID != "") && !httpx.IsID(*k.ApplicationID) {
		errs.Add("applicationId", "must be an application's id (%s)", httpx.IDDescription)
	}
	return errs.Err()
}

// keyAnswer is a key with its plain value, shown once.
type keyAnswer struct {
	*store.ConsumerKey
	APIKey string `json:"apiKey"`
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	req := keyRequest{creating: true}
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	k := &store.ConsumerKey{OrganizationID: p.OrganizationID, APIID: r.PathValue("apiId"), CreatedBy: p.Subject,
		ExpiresAt: req.expiresAt, ApplicationID: req.ApplicationID, DisplayName: deref(req.DisplayName)}
	switch {
	case req.Name != nil:
		k.Name = *req.Name
	case k.DisplayName != "":
		if k.Name = nameFrom(k.DisplayName); k.Name == "" {
			return httpx.BadRequest("name: none can be derived from displayName %q: give a name", clip(k.DisplayName))
		}
	default:
		k.Name = randomName("key")
	}
	if k.DisplayName == "" {
		k.DisplayName = k.Name
	}
	value := generateKey()
	if req.APIKey != nil {
		value = *req.APIKey
	}
	k.Hash, k.MaskedAPIKey = hashKey(value), maskKey(value)
	if err := s.store.CreateConsumerKey(r.Context(), k); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, keyAnswer{k, strings.TrimSpace(value)})
	return nil
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.ConsumerKeys(r.Context(), p.OrganizationID, r.PathValue("apiId"), store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	k, err := s.store.ConsumerKey(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.PathValue("keyName"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, k)
	return nil
}

type regenerateRequest struct {
	APIKey *string `json:"apiKey"`
}

func (g *regenerateRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	if g.APIKey != nil {
		checkKeyValue(&errs, "apiKey", *g.APIKey)
	}
	return errs.Err()
}

func (s *Server) regenerateKey(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req regenerateRequest
	if r.ContentLength != 0 {
		if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
			return err
		}
	}
	value := generateKey()
	if req.APIKey != nil {
		value = *req.APIKey
	}
	k, err := s.store.RegenerateConsumerKey(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.PathValue("keyName"),
		hashKey(value), maskKey(value))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, keyAnswer{k, strings.TrimSpace(value)})
	return nil
}

func (s *Server) updateKey(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req keyRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	u := store.ConsumerKeyUpdate{DisplayName: req.DisplayName, ApplicationID: req.ApplicationID}
	if req.ExpiresAt != nil {
		u.ExpiresAt = &time.Time{} // "" clears it
		if req.expiresAt != nil {
			u.ExpiresAt = req.expiresAt
		}
	}
	k, err := s.store.UpdateConsumerKey(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.PathValue("keyName"), u)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, k)
	return nil
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.store.DeleteConsumerKey(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.PathValue("keyName")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
