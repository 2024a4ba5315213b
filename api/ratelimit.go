package api

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultWSRateLimitPerMinute is the default cap on gateway connection
// attempts per client address. It is generous because a fleet behind one
// NAT reconnects at once after a control-plane restart.
const DefaultWSRateLimitPerMinute = 600

// rateLimiter is a token bucket per key: burst tokens, refilled evenly over
// per. Idle buckets are swept so that the map cannot grow without bound.
type rateLimiter struct {
	mu      sync.Mutex
	burst   float64
	rate    float64 // tokens per second
	buckets map[string]*bucket
	swept   time.Time
	now     func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(burst int, per time.Duration) *rateLimiter {
	return &rateLimiter{burst: float64(burst), rate: float64(burst) / per.Seconds(),
		buckets: map[string]*bucket{}, now: time.Now}
}

// allow takes a token for key and reports whether there was one.
func (l *rateLimiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.swept) > time.Minute {
		for k, b := range l.buckets {
			if l.refill(b, now) >= l.burst {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if l.refill(b, now) < 1 {
		return false
	}
	b.tokens--
	return true
}

// exhausted reports, without taking a token, whether key has none left.
func (l *rateLimiter) exhausted(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	return ok && l.refill(b, l.now()) < 1
}

func (l *rateLimiter) refill(b *bucket, now time.Time) float64 {
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	return b.tokens
}

// clientAddr is the address rate limits apply to: the peer's IP, or, when
// the server is configured to trust its proxy, the last X-Forwarded-For
// entry: the one that proxy appended. Earlier entries come from the client
// and could be anything.
func (s *Server) clientAddr(r *http.Request) string {
	if s.trustXFF {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip := net.ParseIP(strings.TrimSpace(last)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
