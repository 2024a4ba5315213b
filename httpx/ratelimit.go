package httpx

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// RateLimiter is a token bucket per key: burst tokens, refilled evenly over
// per. Idle buckets are swept so that the map cannot grow without bound.
type RateLimiter struct {
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

// NewRateLimiter allows burst events per key, refilled over per.
func NewRateLimiter(burst int, per time.Duration) *RateLimiter {
	return &RateLimiter{burst: float64(burst), rate: float64(burst) / per.Seconds(),
		buckets: map[string]*bucket{}, now: time.Now}
}

// Allow takes a token for key and reports whether there was one.
func (l *RateLimiter) Allow(key string) bool {
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

// Exhausted reports, without taking a token, whether key has none left.
func (l *RateLimiter) Exhausted(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	return ok && l.refill(b, l.now()) < 1
}

func (l *RateLimiter) refill(b *bucket, now time.Time) float64 {
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	return b.tokens
}

// ClientAddr is the address rate limits apply to: the peer's IP, or, when
// trustXFF says the server trusts its proxy, the last X-Forwarded-For
// entry: the one that proxy appended. Earlier entries come from the client
// and could be anything.
func ClientAddr(r *http.Request, trustXFF bool) string {
	if trustXFF {
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
