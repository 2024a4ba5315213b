package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// FuzzVerifyToken feeds arbitrary api-key values to token parsing and
// verification: no panic, nothing but the issued token verifies, and a
// well-formed token round-trips through its parts.
func FuzzVerifyToken(f *testing.F) {
	db := MustOpen(f)
	ctx := context.Background()
	o := mustOrg(f, db)
	g := mustGateway(f, db, o.ID, "fuzz")
	issued, err := db.IssueToken(ctx, o.ID, g.ID)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(issued.Token)
	f.Add(issued.Token[:len(issued.Token)-1] + "A")
	f.Add("gwt_" + strings.Repeat("0", 32) + "_" + strings.Repeat("A", 43))
	f.Add("")
	f.Add("Bearer x")
	f.Fuzz(func(t *testing.T, tok string) {
		if id, secret, ok := ParseToken(tok); ok {
			if formatToken(id, secret) != tok {
				t.Fatalf("%q does not round-trip", tok)
			}
		}
		ident, err := db.VerifyToken(ctx, tok)
		if tok == issued.Token {
			if err != nil || ident.GatewayID != g.ID {
				t.Fatalf("issued token: %v", err)
			}
			return
		}
		if !errors.Is(err, ErrBadToken) {
			t.Fatalf("VerifyToken(%q) = %v, want ErrBadToken", tok, err)
		}
		// (Short inputs such as "a" occur in any message by chance.)
		if len(tok) >= 8 && strings.Contains(err.Error(), tok) {
			t.Fatal("error repeats the token")
		}
	})
}
