package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// LoadOrCreateSigningKey returns the server's own JWT signing key kept at
// path (PKCS #8 PEM, mode 0600), creating it on first use. The key is written
// to a temporary file and renamed, so a crash never leaves half a key.
func LoadOrCreateSigningKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok || ek.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%s: not an ECDSA P-256 key", path)
		}
		return ek, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".jwt-key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := errors.Join(pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), tmp.Sync(), tmp.Close()); err != nil {
		return nil, err
	}
	// Link rather than rename: if another process created the key meanwhile,
	// keep theirs so that tokens already minted stay valid.
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return LoadOrCreateSigningKey(path)
	} else if err != nil {
		return nil, err
	}
	return key, nil
}

// TokenRequest describes a token minted with the local key.
type TokenRequest struct {
	OrganizationID string
	Subject        string
	TTL            time.Duration
	Issuer         string // set to the configured PLATFORM_JWT_ISSUER, if any
	Audience       string // set to the configured PLATFORM_JWT_AUDIENCE, if any
	Now            time.Time
}

// MintToken signs a JWT with the server's own key.
func MintToken(key *ecdsa.PrivateKey, r TokenRequest) (string, error) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   r.Subject,
			Issuer:    r.Issuer,
			IssuedAt:  jwt.NewNumericDate(r.Now),
			NotBefore: jwt.NewNumericDate(r.Now),
			ExpiresAt: jwt.NewNumericDate(r.Now.Add(r.TTL)),
		},
		Organization: r.OrganizationID,
	}
	if r.Audience != "" {
		c.Audience = jwt.ClaimStrings{r.Audience}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	t.Header["kid"] = LocalKeyID(key)
	return t.SignedString(key)
}

// LocalKeyID is the kid of tokens signed with a server's own key: derived
// from its public key, so that the replicas sharing a database can tell
// each other's keys apart (each trusts those registered there).
func LocalKeyID(key *ecdsa.PrivateKey) string {
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(der)
	return "platform-api-" + hex.EncodeToString(sum[:8])
}

// PublicKeyPEM is the PEM of a key's public half.
func PublicKeyPEM(key *ecdsa.PrivateKey) string {
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// ParsePublicKeyPEM reads a public key written by PublicKeyPEM.
func ParsePublicKeyPEM(s string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	return x509.ParsePKIXPublicKey(block.Bytes)
}
