package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"platform-api/store"
)

// validator is implemented by request types that check their own fields. The
// error names every bad field by its JSON path.
type validator interface {
	validate() error
}

// decode reads a JSON body of at most limit bytes into v and validates it.
// Every failure is a client error that names what to fix: 413 over the limit,
// 400 for an empty body, malformed JSON, a wrong type or trailing data.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return err
		}
		return badRequest("request body must hold exactly one JSON value; found more after it")
	}
	if val, ok := v.(validator); ok {
		return val.validate()
	}
	return nil
}

func jsonError(err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return err
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty: send a JSON document")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is not valid JSON: it ends too early")
	case errors.As(err, &syntaxErr):
		return badRequest("request body is not valid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return badRequest("request body must be a JSON %s, not %s", jsonKind(typeErr), typeErr.Value)
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

// fieldErrors collects validation failures as "path: problem" strings.
type fieldErrors []string

func (f *fieldErrors) add(path, format string, a ...any) {
	*f = append(*f, path+": "+fmt.Sprintf(format, a...))
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	msg := f[0]
	for _, s := range f[1:] {
		msg += "; " + s
	}
	return badRequest("%s", msg)
}
