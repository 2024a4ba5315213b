// Package httpx is the request plumbing every handler shares: the error
// shape and its one table of statuses, strict JSON decoding and its shape
// check, ids, paging, rate limits and the handler adapter. It imports
// nothing of the server's own.
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// Error is a client error: an HTTP status and a description that says what to
// fix. Handlers return it (or a store error); ErrorStatus turns either into
// the contract's error body.
type Error struct {
	Status      int
	Description string
}

func (e *Error) Error() string { return e.Description }

func Errorf(status int, format string, a ...any) error {
	return &Error{Status: status, Description: fmt.Sprintf(format, a...)}
}

func BadRequest(format string, a ...any) error { return Errorf(http.StatusBadRequest, format, a...) }

// ErrorBody is the one error shape of the contract.
type ErrorBody struct {
	Code        int    `json:"code"`
	Message     string `json:"message"`
	Description string `json:"description"`
}

// Kind is implemented by errors of lower layers that know which HTTP status
// they mean (the store's not found, conflict, invalid, unavailable and bad
// gateway token). The error's own message, without what callers wrapped
// around it, is the description.
type Kind interface {
	error
	HTTPStatus() int
}

// causer is implemented by errors that keep, for the log only, the cause
// they do not show to the client.
type causer interface{ LogCause() error }

// ErrorStatus is the single table from error kinds to HTTP statuses. Anything
// it does not know is a 500 whose cause is logged but never shown.
func ErrorStatus(err error) (int, string) {
	var apiErr *Error
	var maxErr *http.MaxBytesError
	var kind Kind
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Status, apiErr.Description
	case errors.As(err, &maxErr):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes", maxErr.Limit)
	case errors.Is(err, context.Canceled):
		return StatusClientClosed, "the client closed the request before it was answered"
	case errors.As(err, &kind):
		if status := kind.HTTPStatus(); status != 0 {
			return status, kind.Error()
		}
	}
	return http.StatusInternalServerError, "internal error: the server could not complete the request; see the server log"
}

// RetryAfterSeconds is the Retry-After of every 503.
const RetryAfterSeconds = "5"

// StatusClientClosed is the status logged for a request whose client went
// away (nginx's convention); the client never reads it.
const StatusClientClosed = 499

// WriteError writes err as the contract's error body and records it for the
// access log.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, desc := ErrorStatus(err)
	var c causer
	switch {
	case status == http.StatusServiceUnavailable && errors.As(err, &c) && c.LogCause() != nil:
		log.WarnContext(r.Context(), "request failed: the database is unavailable", "method", r.Method, "path", r.URL.Path, "err", c.LogCause())
	case status >= 500 && status != http.StatusServiceUnavailable:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if status == http.StatusServiceUnavailable {
		// Clients and gateways back off and retry; the outage may be short.
		w.Header().Set("Retry-After", RetryAfterSeconds)
	}
	msg := http.StatusText(status)
	if status == StatusClientClosed {
		msg = "Client Closed Request"
	}
	WriteJSON(w, status, ErrorBody{Code: status, Message: msg, Description: desc})
}

// WriteJSON encodes v into a buffer first, so that an encoding failure can
// still become a clean 500 instead of a half-written body. '<', '>' and '&'
// are written as themselves: HTML escaping would make every such character
// six bytes, and the answers are JSON, never HTML.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		json.NewEncoder(&buf).Encode(ErrorBody{Code: status, Message: http.StatusText(status), Description: "internal error: response could not be encoded"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
