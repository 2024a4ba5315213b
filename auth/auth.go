package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Config says which JWT signatures the public API trusts.
type Config struct {
	// JWKS is a JWKS document's file path or https URL; empty for none.
	JWKS string
	// HMACSecret, when set, verifies HS256 tokens.
	HMACSecret []byte
	// Issuer and Audience, when set, must match the iss and aud claims.
	Issuer   string
	Audience string
	// LocalKey is the server's own signing key; nil when it is not trusted.
	LocalKey *ecdsa.PrivateKey
	// PeerKey, when set with LocalKey, finds the own key of another
	// replica sharing the database by its kid (store.SigningKey), so that
	// a token minted against any replica's data is accepted by all.
	PeerKey func(ctx context.Context, kid string) (string, error)
	// InsecureSkipVerify accepts tokens without checking their signature.
	// For development only.
	InsecureSkipVerify bool
	// HTTPClient fetches a JWKS URL; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock for exp and nbf; nil means time.Now.
	Now func() time.Time
}

// Principal is who made a request.
type Principal struct {
	OrganizationID string
	Subject        string
}

// Authenticator verifies bearer JWTs.
type Authenticator struct {
	cfg       Config
	log       *slog.Logger
	parser    *jwt.Parser
	validator *jwt.Validator
	methods   []string

	mu         sync.Mutex
	keys       map[string]crypto.PublicKey // JWKS keys by kid
	fetchedAt  time.Time
	peers      map[string]crypto.PublicKey // other replicas' own keys by kid
	peerMisses map[string]time.Time        // kids looked up and not found

	// verified remembers tokens whose signature and claims checked out, by
	// SHA-256 of the token, until they expire, so that a client sending the
	// same token on every request pays for one signature check, not one per
	// request (an ES256 or RS256 verification costs far more than the rest
	// of a typical request).
	cacheMu  sync.Mutex
	verified map[[32]byte]cachedPrincipal
}

type cachedPrincipal struct {
	p     Principal
	until time.Time
}

// maxVerifiedCache bounds the cache; when full it is emptied, which costs a
// signature check per token once and never lets the cache grow.
const maxVerifiedCache = 10_000

// refetchEvery bounds how often an unknown kid makes us fetch a JWKS URL again
// (the identity provider rotated its keys), so bad tokens cannot make us
// hammer it.
const refetchEvery = time.Minute

// New loads the configured key sources. A JWKS that cannot be
// read stops the start, naming the setting.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Authenticator, error) {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authenticator{cfg: cfg, log: log}
	if cfg.JWKS != "" {
		if err := a.loadJWKS(ctx); err != nil {
			return nil, fmt.Errorf("PLATFORM_JWT_JWKS: %w", err)
		}
		a.methods = append(a.methods, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
	}
	if len(cfg.HMACSecret) > 0 {
		a.methods = append(a.methods, "HS256", "HS384", "HS512")
	}
	if cfg.LocalKey != nil {
		a.methods = append(a.methods, "ES256")
	}
	if cfg.InsecureSkipVerify {
		log.Warn("PLATFORM_JWT_INSECURE_SKIP_VERIFY is on: JWT signatures are NOT checked and anyone can act as any organization; never use this outside development")
	} else if len(a.methods) == 0 {
		return nil, errors.New("no JWT key source: set PLATFORM_JWT_JWKS or PLATFORM_JWT_HMAC_SECRET, or leave PLATFORM_JWT_LOCAL_KEY on")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(30 * time.Second),
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	a.validator = jwt.NewValidator(opts...) // the same claim checks, for unsigned tokens
	return a, nil
}

// claims are the JWT claims we read; aud may be a string or an array, which
// jwt.RegisteredClaims handles.
type claims struct {
	jwt.RegisteredClaims
	Organization string `json:"organization"`
}

// Authenticate verifies a bearer token and returns its principal. The error
// says why in words fit for a 401 body; it never repeats the token.
func (a *Authenticator) Authenticate(raw string) (Principal, error) {
	key := sha256.Sum256([]byte(raw))
	now := a.cfg.Now()
	a.cacheMu.Lock()
	hit, ok := a.verified[key]
	a.cacheMu.Unlock()
	if ok && now.Before(hit.until) {
		return hit.p, nil
	}
	p, exp, err := a.authenticate(raw)
	if err != nil || exp.IsZero() {
		return p, err
	}
	a.cacheMu.Lock()
	if a.verified == nil || len(a.verified) >= maxVerifiedCache {
		a.verified = make(map[[32]byte]cachedPrincipal)
	}
	a.verified[key] = cachedPrincipal{p: p, until: exp}
	a.cacheMu.Unlock()
	return p, nil
}

// authenticate verifies a token and returns its principal and expiry.
func (a *Authenticator) authenticate(raw string) (Principal, time.Time, error) {
	if err := checkJOSE(raw); err != nil {
		return Principal{}, time.Time{}, err
	}
	var c claims
	var err error
	if a.cfg.InsecureSkipVerify {
		_, _, err = a.parser.ParseUnverified(raw, &c)
		if err == nil {
			err = a.validator.Validate(c)
		}
	} else {
		_, err = a.parser.ParseWithClaims(raw, &c, a.keyFor)
	}
	if err != nil {
		return Principal{}, time.Time{}, a.describeJWTError(err, &c)
	}
	if c.Organization == "" {
		return Principal{}, time.Time{}, errors.New("the token has no organization claim")
	}
	org, err := uuid.Parse(c.Organization)
	if err != nil || len(c.Organization) != 36 {
		return Principal{}, time.Time{}, errors.New("the token's organization claim is not a UUID in its canonical form (8-4-4-4-12 hex digits)")
	}
	var exp time.Time
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.Time
	}
	return Principal{OrganizationID: org.String(), Subject: c.Subject}, exp, nil
}

// checkJOSE refuses what the JWT library would let through but RFC 7515
// and 7519 do not: a "crit" header (it names extensions the verifier must
// understand, and this server understands none), and exp, nbf or iat given
// as anything but a JSON number (the library reads "exp":"9999999999" as a
// number). A malformed token is left to the parser, which words it.
func checkJOSE(raw string) error {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil
	}
	segment := func(s string) map[string]json.RawMessage {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
		if err != nil {
			return nil
		}
		var m map[string]json.RawMessage
		json.Unmarshal(b, &m)
		return m
	}
	if _, ok := segment(parts[0])["crit"]; ok {
		return errors.New(`the token's header has "crit": this server supports no critical JWS extensions`)
	}
	claims := segment(parts[1])
	for _, name := range []string{"exp", "nbf", "iat"} {
		v, ok := claims[name]
		if ok && (len(v) == 0 || v[0] != '-' && (v[0] < '0' || v[0] > '9')) && string(v) != "null" {
			return fmt.Errorf("the token's %s claim must be a number of seconds, not %s", name, v)
		}
	}
	return nil
}

// describeJWTError words a failed check of a token whose claims, as far
// as they could be read, are c.
func (a *Authenticator) describeJWTError(err error, c *claims) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return errors.New("the token has expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errors.New("the token is not valid yet")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return a.missingClaims(c)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errors.New("the token's issuer is not trusted")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errors.New("the token is not meant for this audience")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("the token is malformed")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return errors.New("the token's signature does not verify against a trusted key")
	}
	return errors.New("the token is not valid")
}

// missingClaims names the claims this server requires that c lacks, and
// what it requires of them: exp always, iss and aud when configured.
func (a *Authenticator) missingClaims(c *claims) error {
	var names, wants []string
	if c.ExpiresAt == nil {
		names, wants = append(names, "exp"), append(wants, "exp (an expiry time)")
	}
	if a.cfg.Issuer != "" && c.Issuer == "" {
		names, wants = append(names, "iss"), append(wants, fmt.Sprintf("iss = %q", a.cfg.Issuer))
	}
	if a.cfg.Audience != "" && !slices.ContainsFunc(c.Audience, func(s string) bool { return s != "" }) {
		names, wants = append(names, "aud"), append(wants, fmt.Sprintf("aud = %q", a.cfg.Audience))
	}
	if len(names) == 0 {
		return errors.New("the token lacks a claim this server requires")
	}
	return fmt.Errorf("the token has no %s claim; this server requires %s", joinWords(names, "or"), joinWords(wants, "and"))
}

// joinWords joins words as in a sentence: "a", "a or b", "a, b or c".
func joinWords(words []string, conj string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " " + conj + " " + words[len(words)-1]
}

// legacyLocalKeyID is the kid of tokens signed with the server's own key
// by versions before replicas; they still verify against this server's key.
const legacyLocalKeyID = "platform-api-local"

// peerKey finds and remembers another replica's own public key. An unknown
// kid is looked up again at most once per refetchEvery, so that forged
// kids cannot make every request query the database.
func (a *Authenticator) peerKey(kid string) (crypto.PublicKey, error) {
	a.mu.Lock()
	k, ok := a.peers[kid]
	missedAt, missed := a.peerMisses[kid]
	a.mu.Unlock()
	if ok {
		return k, nil
	}
	if missed && a.cfg.Now().Sub(missedAt) < refetchEvery {
		return nil, errors.New("unknown key")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pemText, err := a.cfg.PeerKey(ctx, kid)
	if err == nil {
		k, err = ParsePublicKeyPEM(pemText)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		if a.peerMisses == nil || len(a.peerMisses) > maxVerifiedCache {
			a.peerMisses = map[string]time.Time{}
		}
		a.peerMisses[kid] = a.cfg.Now()
		return nil, err
	}
	if a.peers == nil {
		a.peers = map[string]crypto.PublicKey{}
	}
	a.peers[kid] = k
	return k, nil
}

// keyFor picks the verification key by the token's algorithm family and kid.
// An HMAC token only ever gets the HMAC secret and an asymmetric token only a
// public key, so one kind of key can never be used as the other (algorithm
// confusion); jwt also refuses a key of the wrong type.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(a.cfg.HMACSecret) == 0 {
			return nil, errors.New("HMAC tokens are not accepted")
		}
		return a.cfg.HMACSecret, nil
	case *jwt.SigningMethodECDSA, *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS, *jwt.SigningMethodEd25519:
		if a.cfg.LocalKey != nil && (kid == legacyLocalKeyID || kid == LocalKeyID(a.cfg.LocalKey)) {
			return &a.cfg.LocalKey.PublicKey, nil
		}
		if a.cfg.LocalKey != nil && a.cfg.PeerKey != nil && strings.HasPrefix(kid, "platform-api-") {
			if k, err := a.peerKey(kid); err == nil {
				return k, nil
			}
		}
		if a.cfg.JWKS != "" {
			return a.jwksKey(kid)
		}
	}
	return nil, fmt.Errorf("no trusted key for algorithm %s", t.Method.Alg())
}

// jwksKey finds the key for kid, fetching a JWKS URL again (at most once per
// refetchEvery) when the kid is unknown. The fetch runs without the lock, so
// other logins are not held up by a slow identity provider.
func (a *Authenticator) jwksKey(kid string) (crypto.PublicKey, error) {
	a.mu.Lock()
	k, ok := a.lookupLocked(kid)
	refetch := !ok && isURL(a.cfg.JWKS) && a.cfg.Now().Sub(a.fetchedAt) > refetchEvery
	if refetch {
		a.fetchedAt = a.cfg.Now() // this caller fetches; others wait for the next window
	}
	a.mu.Unlock()
	if ok {
		return k, nil
	}
	if refetch {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, err := a.fetchJWKS(ctx)
		if err != nil {
			a.log.Warn("JWKS refresh failed", "err", err)
		}
		a.mu.Lock()
		if err == nil {
			a.keys = keys
		}
		k, ok = a.lookupLocked(kid)
		a.mu.Unlock()
		if ok {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no JWKS key with kid %q", kid)
}

// lookupLocked finds a key by kid; a token without kid matches when the set
// has exactly one key. a.mu must be held.
func (a *Authenticator) lookupLocked(kid string) (crypto.PublicKey, bool) {
	if kid == "" && len(a.keys) == 1 {
		for _, k := range a.keys {
			return k, true
		}
	}
	k, ok := a.keys[kid]
	return k, ok
}

func isURL(s string) bool { return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") }

func (a *Authenticator) loadJWKS(ctx context.Context) error {
	keys, err := a.fetchJWKS(ctx)
	if err != nil {
		return err
	}
	a.keys, a.fetchedAt = keys, a.cfg.Now()
	return nil
}

func (a *Authenticator) fetchJWKS(ctx context.Context) (map[string]crypto.PublicKey, error) {
	var body []byte
	src := a.cfg.JWKS
	switch {
	case strings.HasPrefix(src, "http://"):
		return nil, errors.New("a JWKS URL must use https")
	case strings.HasPrefix(src, "https://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		resp, err := a.cfg.HTTPClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", src, resp.Status)
		}
		if body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
			return nil, err
		}
	default:
		var err error
		if body, err = os.ReadFile(src); err != nil {
			return nil, err
		}
	}
	return parseJWKS(body)
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads the public keys of a JWKS document (RSA, EC P-256/384/521
// and Ed25519). Keys meant for encryption are skipped.
func parseJWKS(data []byte) (map[string]crypto.PublicKey, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	keys := map[string]crypto.PublicKey{}
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		key, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d (kid %q): %w", i, k.Kid, err)
		}
		keys[k.Kid] = key
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no signing key")
	}
	return keys, nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding.DecodeString
	switch k.Kty {
	case "RSA":
		n, err1 := b64(k.N)
		e, err2 := b64(k.E)
		if err := errors.Join(err1, err2); err != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA n or e")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 {
			return nil, errors.New("RSA key shorter than 2048 bits")
		}
		return pub, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		x, err1 := b64(k.X)
		y, err2 := b64(k.Y)
		if err := errors.Join(err1, err2); err != nil {
			return nil, errors.New("bad EC x or y")
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, errors.New("bad EC x or y length")
		}
		point := append([]byte{4}, append(x, y...)...)
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	case "OKP":
		x, err := b64(k.X)
		if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("only Ed25519 OKP keys are supported")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("unsupported key type %q", k.Kty)
}
