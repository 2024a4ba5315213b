package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"platform-api/store"
)

// Error is a client error: an HTTP status and a description that says what to
// fix. Handlers return it (or a store error); errorStatus turns either into
// the contract's error body.
type Error struct {
	Status      int
	Description string
}

func (e *Error) Error() string { return e.Description }

func errorf(status int, format string, a ...any) error {
	return &Error{Status: status, Description: fmt.Sprintf(format, a...)}
}

func badRequest(format string, a ...any) error { return errorf(http.StatusBadRequest, format, a...) }

// errorBody is the one error shape of the contract.
type errorBody struct {
	Code        int    `json:"code"`
	Message     string `json:"message"`
	Description string `json:"description"`
}

// errorStatus is the single table from error kinds to HTTP statuses. Anything
// it does not know is a 500 whose cause is logged but never shown.
func errorStatus(err error) (int, string) {
	var apiErr *Error
	var maxErr *http.MaxBytesError
	var storeErr *store.Error
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Status, apiErr.Description
	case errors.As(err, &maxErr):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes", maxErr.Limit)
	case errors.Is(err, context.Canceled):
		return statusClientClosed, "the client closed the request before it was answered"
	case errors.Is(err, store.ErrBadToken):
		return http.StatusUnauthorized, "the api-key header does not hold a valid gateway token"
	case errors.As(err, &storeErr):
		// The store's message, without the wrapping callers added.
		switch {
		case errors.Is(err, store.ErrUnavailable):
			return http.StatusServiceUnavailable, storeErr.Error()
		case errors.Is(err, store.ErrNotFound):
			return http.StatusNotFound, storeErr.Error()
		case errors.Is(err, store.ErrConflict):
			return http.StatusConflict, storeErr.Error()
		case errors.Is(err, store.ErrInvalid):
			return http.StatusBadRequest, storeErr.Error()
		}
	}
	return http.StatusInternalServerError, "internal error: the server could not complete the request; see the server log"
}

// statusClientClosed is the status logged for a request whose client went
// away (nginx's convention); the client never reads it.
const statusClientClosed = 499

// writeError writes err as the contract's error body and records it for the
// access log.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, desc := errorStatus(err)
	var storeErr *store.Error
	switch {
	case status == http.StatusServiceUnavailable && errors.As(err, &storeErr) && storeErr.Cause != nil:
		log.WarnContext(r.Context(), "request failed: the database is unavailable", "method", r.Method, "path", r.URL.Path, "err", storeErr.Cause)
	case status >= 500 && status != http.StatusServiceUnavailable:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	msg := http.StatusText(status)
	if status == statusClientClosed {
		msg = "Client Closed Request"
	}
	writeJSON(w, status, errorBody{Code: status, Message: msg, Description: desc})
}

// writeJSON encodes v into a buffer first, so that an encoding failure can
// still become a clean 500 instead of a half-written body. '<', '>' and '&'
// are written as themselves: HTML escaping would make every such character
// six bytes, and the answers are JSON, never HTML.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		json.NewEncoder(&buf).Encode(errorBody{Code: status, Message: http.StatusText(status), Description: "internal error: response could not be encoded"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
