package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testOrg = "6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c"

type authKeys struct {
	local   *ecdsa.PrivateKey
	rsa     *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
	ed      ed25519.PrivateKey
	hmac    []byte
	jwksDir string
}

func newAuthKeys(t *testing.T) *authKeys {
	t.Helper()
	k := &authKeys{hmac: []byte("0123456789abcdef0123456789abcdef"), jwksDir: t.TempDir()}
	var err error
	if k.local, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	ecPub, _ := k.ec.PublicKey.Bytes()
	doc := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "rsa1", "use": "sig", "n": b64(k.rsa.N.Bytes()), "e": b64(big.NewInt(int64(k.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64(ecPub[1:33]), "y": b64(ecPub[33:])},
		{"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": b64(k.ed.Public().(ed25519.PublicKey))},
		{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
	}}
	data, _ := json.Marshal(doc)
	if err := os.WriteFile(filepath.Join(k.jwksDir, "jwks.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *authKeys) authenticator(t *testing.T, mod func(*Config)) *Authenticator {
	t.Helper()
	cfg := Config{JWKS: filepath.Join(k.jwksDir, "jwks.json"), LocalKey: k.local}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sign(t *testing.T, m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"organization": testOrg, "sub": "alice", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	c[k] = v
	if v == nil {
		delete(c, k)
	}
	return c
}

func TestAuthenticate(t *testing.T) {
	k := newAuthKeys(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&k.rsa.PublicKey))})
	unsigned := sign(t, jwt.SigningMethodNone, "", jwt.UnsafeAllowNoneSignatureType, validClaims())
	past := time.Now().Add(-2 * time.Hour).Unix()
	future := time.Now().Add(2 * time.Hour).Unix()

	tests := []struct {
		name    string
		cfg     func(*Config)
		token   string
		wantErr string // empty: accepted
	}{
		{"LocalKey", nil, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, validClaims()), ""},
		{"JWKSRSA", nil, sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, validClaims()), ""},
		{"JWKSEC", nil, sign(t, jwt.SigningMethodES256, "ec1", k.ec, validClaims()), ""},
		{"JWKSEdDSA", nil, sign(t, jwt.SigningMethodEdDSA, "ed1", k.ed, validClaims()), ""},
		{"HMAC", func(c *Config) { c.HMACSecret = k.hmac }, sign(t, jwt.SigningMethodHS256, "", k.hmac, validClaims()), ""},
		{"Expired", nil, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, with(validClaims(), "exp", past)), "expired"},
		{"NotYetValid", nil, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, with(validClaims(), "nbf", future)), "not valid yet"},
		{"NoExp", nil, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, with(validClaims(), "exp", nil)), "no exp"},
		{"WrongKey", nil, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, other, validClaims()), "signature"},
		{"UnknownKid", nil, sign(t, jwt.SigningMethodES256, "nope", other, validClaims()), "signature"},
		{"LocalKeyOff", func(c *Config) { c.LocalKey = nil }, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, validClaims()), "signature"},
		{"WrongIssuer", func(c *Config) { c.Issuer = "https://idp.example" }, sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, with(validClaims(), "iss", "https://evil.example")), "issuer"},
		{"RightIssuer", func(c *Config) { c.Issuer = "https://idp.example" }, sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, with(validClaims(), "iss", "https://idp.example")), ""},
		{"WrongAudience", func(c *Config) { c.Audience = "platform" }, sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, with(validClaims(), "aud", "other")), "audience"},
		{"AudienceArray", func(c *Config) { c.Audience = "platform" }, sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, with(validClaims(), "aud", []string{"x", "platform"})), ""},
		{"AlgNone", nil, unsigned, "signature"},
		{"AlgNoneWithHMAC", func(c *Config) { c.HMACSecret = k.hmac }, unsigned, "signature"},
		// Algorithm confusion: HS256 signed with the RSA public key as the secret.
		{"HMACWithRSAPublicKey", nil, sign(t, jwt.SigningMethodHS256, "rsa1", rsaPubPEM, validClaims()), "signature"},
		{"HMACWithRSAPublicKeyWhenHMACOn", func(c *Config) { c.HMACSecret = k.hmac }, sign(t, jwt.SigningMethodHS256, "rsa1", rsaPubPEM, validClaims()), "signature"},
		{"MissingOrganization", nil, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, with(validClaims(), "organization", nil)), "no organization"},
		{"OrganizationNotUUID", nil, sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, with(validClaims(), "organization", "acme")), "not a UUID"},
		{"Garbage", nil, "not.a.jwt", "malformed"},
		{"InsecureAcceptsUnsigned", func(c *Config) { c.InsecureSkipVerify = true }, unsigned, ""},
		{"InsecureStillChecksExpiry", func(c *Config) { c.InsecureSkipVerify = true },
			sign(t, jwt.SigningMethodNone, "", jwt.UnsafeAllowNoneSignatureType, with(validClaims(), "exp", past)), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := k.authenticator(t, tt.cfg)
			p, err := a.Authenticate(tt.token)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if p.OrganizationID != testOrg {
					t.Fatalf("organization = %q", p.OrganizationID)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Fatal("error repeats the token")
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestAuthenticatorNeedsAKeySource(t *testing.T) {
	_, err := New(context.Background(), Config{}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("no key source accepted")
	}
	_, err = New(context.Background(), Config{JWKS: filepath.Join(t.TempDir(), "missing.json")}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "PLATFORM_JWT_JWKS") {
		t.Fatalf("missing JWKS file: %v", err)
	}
}

func TestJWKSFromHTTPS(t *testing.T) {
	k := newAuthKeys(t)
	data, _ := os.ReadFile(filepath.Join(k.jwksDir, "jwks.json"))
	idp := httpsServer(t, data)
	a, err := New(context.Background(), Config{JWKS: idp.URL + "/jwks", HTTPClient: idp.Client()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, validClaims())); err != nil {
		t.Fatal(err)
	}
}

func TestOrganizationClaimMustBeCanonical(t *testing.T) {
	k := newAuthKeys(t)
	a := k.authenticator(t, nil)
	for _, org := range []string{"urn:uuid:" + testOrg, "{" + testOrg + "}", strings.ReplaceAll(testOrg, "-", ""), strings.ToUpper(testOrg)} {
		p, err := a.Authenticate(sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, with(validClaims(), "organization", org)))
		if err == nil && p.OrganizationID != testOrg {
			t.Fatalf("%q became organization %q", org, p.OrganizationID)
		}
		if err == nil && len(org) != 36 {
			t.Fatalf("%q accepted", org)
		}
	}
}

// httpsServer serves body on every path over TLS.
func httpsServer(t testing.TB, body []byte) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	t.Cleanup(srv.Close)
	return srv
}

// TestJWTStrictness: a crit header, and time claims given as strings, were
// accepted by the JWT library.
func TestJWTStrictness(t *testing.T) {
	k := newAuthKeys(t)
	a := k.authenticator(t, nil)
	crit := jwt.NewWithClaims(jwt.SigningMethodES256, validClaims())
	crit.Header["kid"] = legacyLocalKeyID
	crit.Header["crit"] = []string{"b64"}
	critTok, err := crit.SignedString(k.local)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(critTok); err == nil || !strings.Contains(err.Error(), "crit") {
		t.Fatalf("crit header: %v", err)
	}
	for _, claim := range []string{"exp", "nbf", "iat"} {
		c := validClaims()
		c[claim] = fmt.Sprint(time.Now().Add(time.Hour).Unix())
		if claim != "exp" {
			c[claim] = fmt.Sprint(time.Now().Add(-time.Hour).Unix())
		}
		tok := sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, c)
		if _, err := a.Authenticate(tok); err == nil || !strings.Contains(err.Error(), claim+" claim must be a number") {
			t.Fatalf("%s as a string: %v", claim, err)
		}
	}
	if _, err := a.Authenticate(sign(t, jwt.SigningMethodES256, legacyLocalKeyID, k.local, validClaims())); err != nil {
		t.Fatalf("a valid token is refused: %v", err)
	}
}

// TestMissingRequiredClaimNamed: a token without a claim this server
// requires is told which one, and what is required; it was told "the
// token has no exp claim" whatever was missing.
func TestMissingRequiredClaimNamed(t *testing.T) {
	k := newAuthKeys(t)
	issuer := func(c *Config) { c.Issuer = "https://idp.example" }
	audience := func(c *Config) { c.Audience = "platform" }
	both := func(c *Config) { issuer(c); audience(c) }
	good := func() jwt.MapClaims {
		return with(with(validClaims(), "iss", "https://idp.example"), "aud", "platform")
	}
	for _, tc := range []struct {
		name   string
		cfg    func(*Config)
		claims jwt.MapClaims
		want   string
	}{
		{"NoIss", issuer, with(validClaims(), "aud", "platform"), `the token has no iss claim; this server requires iss = "https://idp.example"`},
		{"EmptyIss", issuer, with(validClaims(), "iss", ""), `the token has no iss claim; this server requires iss = "https://idp.example"`},
		{"NoAud", audience, validClaims(), `the token has no aud claim; this server requires aud = "platform"`},
		{"EmptyAudArray", audience, with(validClaims(), "aud", []string{}), `the token has no aud claim; this server requires aud = "platform"`},
		{"NoIssNoAud", both, validClaims(), `the token has no iss or aud claim; this server requires iss = "https://idp.example" and aud = "platform"`},
		{"NoExp", both, with(good(), "exp", nil), `the token has no exp claim; this server requires exp (an expiry time)`},
		{"NoExpNoAud", both, with(with(good(), "exp", nil), "aud", nil), `the token has no exp or aud claim; this server requires exp (an expiry time) and aud = "platform"`},
		{"NoExpNothingElseRequired", nil, with(validClaims(), "exp", nil), `the token has no exp claim; this server requires exp (an expiry time)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, insecure := range []bool{false, true} {
				a := k.authenticator(t, func(c *Config) {
					if tc.cfg != nil {
						tc.cfg(c)
					}
					c.InsecureSkipVerify = insecure
				})
				_, err := a.Authenticate(sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, tc.claims))
				if err == nil || err.Error() != tc.want {
					t.Fatalf("insecure=%v: %v\nwant: %s", insecure, err, tc.want)
				}
			}
		})
	}
	a := k.authenticator(t, both)
	if _, err := a.Authenticate(sign(t, jwt.SigningMethodRS256, "rsa1", k.rsa, good())); err != nil {
		t.Fatalf("a token with every required claim is refused: %v", err)
	}
}
