package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// FuzzAuthenticate feeds arbitrary bearer tokens to JWT verification: no
// panic, no forged token accepted, and an accepted one always names an
// organization UUID.
func FuzzAuthenticate(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := MintToken(key, TokenRequest{OrganizationID: testOrg, TTL: 24 * time.Hour})
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJvcmdhbml6YXRpb24iOiJ4In0.")
	f.Add("a.b.c")
	f.Add(good[:len(good)-2])
	a, err := New(context.Background(), Config{LocalKey: key, HMACSecret: bytes.Repeat([]byte("k"), 32)}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := a.Authenticate(raw)
		if err != nil {
			if strings.Contains(err.Error(), raw) && len(raw) > 8 {
				t.Fatal("error repeats the token")
			}
			return
		}
		if raw != good {
			// Only the minted token verifies (JSON re-encodings of it are
			// different signed bytes, so they cannot).
			t.Fatalf("accepted a token that was never signed: %q", raw)
		}
		if len(p.OrganizationID) != 36 || uuid.Validate(p.OrganizationID) != nil {
			t.Fatalf("organization %q", p.OrganizationID)
		}
	})
}
