package gatewayapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"platform-api/httpx"
)

// Defaults of the bound on document answers running at once (GET
// /api/internal/v1/apis and fetch-batch): each is streamed, so what one
// holds is a few buffers, but each renders and compresses documents and
// holds a connection of the client's for as long as it reads.
const (
	DefaultMaxDocumentAnswers           = 8
	DefaultMaxDocumentAnswersPerGateway = 2
)

// answerLimiter bounds the document answers running at once, per gateway
// and in all. Over a bound the request is refused at once, never queued: a
// gateway retries (Retry-After), and a refusal costs nothing.
type answerLimiter struct {
	total, perGateway int

	mu        sync.Mutex
	inUse     int
	byGateway map[string]int
}

func newAnswerLimiter(total, perGateway int) *answerLimiter {
	if total <= 0 {
		total = DefaultMaxDocumentAnswers
	}
	if perGateway <= 0 {
		perGateway = DefaultMaxDocumentAnswersPerGateway
	}
	return &answerLimiter{total: total, perGateway: perGateway, byGateway: map[string]int{}}
}

// acquire takes a slot for gatewayID, or answers why not: 429 when this
// gateway has its share already (it is the one asking too much), 503 when
// the server has every slot taken (no fault of this gateway). Neither is a
// status second-generation gateways give up on (contract §6: 401, 403,
// 404, 409 and 422 are); both carry Retry-After.
func (l *answerLimiter) acquire(w http.ResponseWriter, gatewayID string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.byGateway[gatewayID] >= l.perGateway:
		w.Header().Set("Retry-After", "1")
		return nil, httpx.Errorf(http.StatusTooManyRequests, "this gateway already has %d document downloads in progress, the most allowed per gateway (PLATFORM_MAX_DOCUMENT_ANSWERS_PER_GATEWAY); retry after Retry-After seconds, once one has ended", l.perGateway)
	case l.inUse >= l.total:
		w.Header().Set("Retry-After", "1")
		return nil, httpx.Errorf(http.StatusServiceUnavailable, "the server is serving %d document downloads already, the most it runs at once (PLATFORM_MAX_DOCUMENT_ANSWERS); retry after Retry-After seconds", l.total)
	}
	l.inUse++
	l.byGateway[gatewayID]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.inUse--
			if l.byGateway[gatewayID]--; l.byGateway[gatewayID] <= 0 {
				delete(l.byGateway, gatewayID)
			}
		})
	}, nil
}

// streamedAnswer is an archive written to the client as it is produced.
// Its headers go out with the first bytes, so a failure before then is
// still the contract's JSON error; a failure after them cuts the
// connection, so the gateway sees a broken download rather than a short
// archive that looks whole.
type streamedAnswer struct {
	w        http.ResponseWriter
	header   map[string]string
	started  bool
	writeErr error // the client's side failed: it went away
}

func newStreamedAnswer(w http.ResponseWriter, header map[string]string) *streamedAnswer {
	return &streamedAnswer{w: w, header: header}
}

func (a *streamedAnswer) Write(p []byte) (int, error) {
	if !a.started {
		a.started = true
		for k, v := range a.header {
			a.w.Header().Set(k, v)
		}
		a.w.WriteHeader(http.StatusOK)
	}
	n, err := a.w.Write(p)
	if err != nil && a.writeErr == nil {
		a.writeErr = err
	}
	return n, err
}

// fail ends the answer after err: returned (and answered as JSON) when
// nothing went out yet, else the connection is cut.
func (a *streamedAnswer) fail(r *http.Request, log *slog.Logger, err error) error {
	if !a.started {
		return err
	}
	if a.writeErr == nil {
		log.WarnContext(r.Context(), "document answer cut short", "path", r.URL.Path, "err", err)
	}
	panic(http.ErrAbortHandler)
}

func attachment(contentType, filename string) map[string]string {
	h := map[string]string{"Content-Type": contentType}
	if filename != "" {
		h["Content-Disposition"] = fmt.Sprintf(`attachment; filename="%s"`, filename)
	}
	return h
}
