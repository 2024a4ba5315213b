package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"platform-api/store"
)

// validator is implemented by request types that check their own fields. The
// error names every bad field by its JSON path.
type validator interface {
	validate(ctx context.Context) error
}

// decode reads a JSON body of at most limit bytes into v and validates it.
// Every failure is a client error that names what to fix: 413 over the
// limit, 400 for an empty or null body, malformed JSON, a field name that is
// not exactly one of v's, a wrong type, nesting deeper than MaxJSONDepth,
// text that is not UTF-8, or trailing data (checkJSON).
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return decodeRequest(w, r, limit, v, true)
}

// decodeFromGateway is decode for bodies gateways send: fields that v does
// not have are allowed (gateways may send more than the contract lists),
// every other rule holds.
func decodeFromGateway(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return decodeRequest(w, r, limit, v, false)
}

func decodeRequest(w http.ResponseWriter, r *http.Request, limit int64, v any, strict bool) error {
	data, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	if err := decodeJSON(data, v, strict); err != nil {
		return err
	}
	if val, ok := v.(validator); ok {
		return val.validate(r.Context())
	}
	return nil
}

// readBody reads the whole body, refusing more than limit bytes (413).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, err
		}
		return nil, badRequest("request body could not be read: %v", err)
	}
	return data, nil
}

// decodeJSON checks data against v's type, then decodes it into v.
func decodeJSON(data []byte, v any, strict bool) error {
	if err := checkJSON(data, reflect.TypeOf(v), strict); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return jsonError(err)
	}
	return nil
}

// jsonError words an encoding/json error that checkJSON let through (it
// should let none through; this is the safety net).
func jsonError(err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty: send a JSON document")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is not valid JSON: it ends too early")
	case errors.As(err, &syntaxErr):
		return badRequest("request body is not valid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return badRequest("request body must be %s, not %s", jsonKind(typeErr), typeErr.Value)
		}
		return badRequest("%s: must be %s, not %s", typeErr.Field, jsonKind(typeErr), typeErr.Value)
	}
	return badRequest("request body could not be decoded: %v", err)
}

// jsonKind names the JSON type a Go type expects.
func jsonKind(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	}
	return "a " + e.Type.String()
}

// Pagination bounds of the contract.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// parsePage reads ?offset= and ?limit=.
func parsePage(r *http.Request) (store.Page, error) {
	p := store.Page{Limit: defaultLimit}
	q := r.URL.Query()
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, badRequest("offset: must be a whole number of 0 or more, not %q", s)
		}
		p.Offset = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return p, badRequest("limit: must be a whole number from 1 to %d, not %q", maxLimit, s)
		}
		p.Limit = n
	}
	return p, nil
}

type pagination struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// listBody is the contract's list envelope. List is never null.
type listBody[T any] struct {
	Count      int        `json:"count"`
	List       []T        `json:"list"`
	Pagination pagination `json:"pagination"`
}

func newList[T any](list []T, total int, p store.Page) listBody[T] {
	if list == nil {
		list = []T{}
	}
	return listBody[T]{Count: len(list), List: list, Pagination: pagination{Total: total, Offset: p.Offset, Limit: p.Limit}}
}

// fieldErrors collects validation failures as "path: problem" strings. It
// keeps the first maxListedErrors and counts the rest, so that a body of
// thousands of bad items costs a bounded answer and linear work.
type fieldErrors struct {
	list []string
	more int
}

// maxListedErrors is how many problems one 400 answer lists.
const maxListedErrors = 20

func (f *fieldErrors) add(path, format string, a ...any) {
	if len(f.list) >= maxListedErrors {
		f.more++
		return
	}
	f.list = append(f.list, path+": "+fmt.Sprintf(format, a...))
}

func (f *fieldErrors) err() error {
	if len(f.list) == 0 {
		return nil
	}
	msg := strings.Join(f.list, "; ")
	if f.more > 0 {
		msg += fmt.Sprintf("; and %d more", f.more)
	}
	return badRequest("%s", msg)
}
