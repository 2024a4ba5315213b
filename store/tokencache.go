package store

import (
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"sync"
	"time"
)

// tokenCache remembers gateway tokens verified lately, so that a gateway's
// downloads after each event (ten thousand of them when a deployment
// reaches a fleet) do not each read and hash its token again. It holds
// only a digest of each secret seen, in memory. An entry is forgotten when
// its token is revoked or its gateway deleted (here at commit, on other
// replicas when the change is heard), when changes may have been missed
// (a lost PostgreSQL listener), and after lastUsedEvery, when the token's
// last use is due to be written anyway.
type tokenCache struct {
	mu sync.Mutex
	m  map[string]cachedToken // by token id
	// byGateway holds the ids in m of each gateway's tokens (at most a
	// few), so that a deleted gateway's are found without a walk of m: a
	// walk under mu took about a millisecond at 100,000 entries for each
	// gateway deleted, and held up every verification meanwhile.
	byGateway map[string][]string
	// epoch counts forgets: a verification that read the database before
	// a revocation was forgotten does not cache what it read.
	epoch uint64
}

type cachedToken struct {
	digest [sha256.Size]byte // of the secret that was verified
	ident  GatewayIdentity
	at     time.Time
}

// maxCachedTokens bounds the cache (some 150 bytes an entry); past it the
// cache starts over.
const maxCachedTokens = 100_000

// get returns the identity of a token verified lately with this secret.
func (c *tokenCache) get(id string, secret []byte, now time.Time) (*GatewayIdentity, bool) {
	d := sha256.Sum256(secret)
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if !ok || now.Sub(e.at) >= lastUsedEvery || subtle.ConstantTimeCompare(d[:], e.digest[:]) != 1 {
		return nil, false
	}
	ident := e.ident
	return &ident, true
}

// begin returns the epoch to give put, taken before the database is read.
func (c *tokenCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// put remembers a token verified with the database as read since epoch.
func (c *tokenCache) put(epoch uint64, id string, secret []byte, ident GatewayIdentity, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return // something was forgotten since: what was read may be stale
	}
	if c.m == nil || len(c.m) >= maxCachedTokens {
		c.m, c.byGateway = map[string]cachedToken{}, map[string][]string{}
	}
	if _, ok := c.m[id]; !ok { // a token's gateway never changes
		c.byGateway[ident.GatewayID] = append(c.byGateway[ident.GatewayID], id)
	}
	c.m[id] = cachedToken{digest: sha256.Sum256(secret), ident: ident, at: now}
}

// forget drops what ch makes stale: a revoked token, a deleted gateway's
// tokens.
func (c *tokenCache) forget(ch *Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	switch ch.Kind {
	case ChangeTokenRevoked:
		e, ok := c.m[ch.TokenID]
		if !ok {
			return
		}
		delete(c.m, ch.TokenID)
		gw := e.ident.GatewayID
		ids := slices.DeleteFunc(c.byGateway[gw], func(id string) bool { return id == ch.TokenID })
		if len(ids) == 0 {
			delete(c.byGateway, gw)
		} else {
			c.byGateway[gw] = ids
		}
	case ChangeGatewayDeleted:
		for _, id := range c.byGateway[ch.GatewayID] {
			delete(c.m, id)
		}
		delete(c.byGateway, ch.GatewayID)
	}
}

// clear forgets every token.
func (c *tokenCache) clear() {
	c.mu.Lock()
	c.m, c.byGateway = nil, nil
	c.epoch++
	c.mu.Unlock()
}
