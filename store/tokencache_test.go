package store

import (
	"fmt"
	"testing"
	"time"
)

// TestTokenCacheForgets: a deleted gateway's tokens, and a revoked token,
// are forgotten; the other gateways' are kept.
func TestTokenCacheForgets(t *testing.T) {
	var c tokenCache
	now := time.Now()
	put := func(id, gw string) {
		c.put(c.begin(), id, []byte("secret-"+id), GatewayIdentity{GatewayID: gw, TokenID: id}, now)
	}
	put("a1", "A")
	put("a2", "A")
	put("a1", "A") // verified again
	put("b1", "B")
	has := func(id string) bool {
		_, ok := c.get(id, []byte("secret-"+id), now)
		return ok
	}
	c.forget(&Change{Kind: ChangeGatewayDeleted, GatewayID: "A"})
	if has("a1") || has("a2") || !has("b1") {
		t.Fatalf("after gateway A's deletion: a1 %v, a2 %v, b1 %v (want false, false, true)", has("a1"), has("a2"), has("b1"))
	}
	put("b2", "B")
	c.forget(&Change{Kind: ChangeTokenRevoked, TokenID: "b1"})
	if has("b1") || !has("b2") {
		t.Fatalf("after b1's revocation: b1 %v, b2 %v (want false, true)", has("b1"), has("b2"))
	}
	c.forget(&Change{Kind: ChangeGatewayDeleted, GatewayID: "B"})
	if has("b2") || len(c.m) != 0 || len(c.byGateway) != 0 {
		t.Fatalf("after gateway B's deletion: b2 %v, %d entries, %d gateways indexed (want none)", has("b2"), len(c.m), len(c.byGateway))
	}
}

// BenchmarkTokenCacheForgetGateway is the cost of forgetting one deleted
// gateway's token with 100,000 others remembered (it holds the lock every
// gateway's verification takes).
func BenchmarkTokenCacheForgetGateway(b *testing.B) {
	var c tokenCache
	now := time.Now()
	const n = 99_999
	for i := range n {
		id := fmt.Sprint("t", i)
		c.put(c.begin(), id, []byte("s"), GatewayIdentity{GatewayID: fmt.Sprint("g", i), TokenID: id}, now)
	}
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprint("x", i)
		c.put(c.begin(), id, []byte("s"), GatewayIdentity{GatewayID: "gone", TokenID: id}, now)
		c.forget(&Change{Kind: ChangeGatewayDeleted, GatewayID: "gone"})
	}
}
