package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Validator is implemented by request types that check their own fields. The
// error names every bad field by its JSON path.
type validator interface {
	Validate(ctx context.Context) error
}

// Decode reads a JSON body of at most limit bytes into v and validates it.
// Every failure is a client error that names what to fix: 415 for a body
// declared as anything but JSON (CheckJSONContentType), 413 over the
// limit, 400 for an empty or null body, malformed JSON, a field name that is
// not exactly one of v's, a wrong type, nesting deeper than MaxJSONDepth,
// text that is not UTF-8, or trailing data (CheckJSON).
func Decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return decodeRequest(w, r, limit, v, true)
}

// DecodeFromGateway is decode for bodies gateways send: fields that v does
// not have are allowed (gateways may send more than the contract lists),
// every other rule holds.
func DecodeFromGateway(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return decodeRequest(w, r, limit, v, false)
}

func decodeRequest(w http.ResponseWriter, r *http.Request, limit int64, v any, strict bool) error {
	if err := CheckJSONContentType(r); err != nil {
		return err
	}
	data, err := ReadBody(w, r, limit)
	if err != nil {
		return err
	}
	if err := DecodeJSON(data, v, strict); err != nil {
		return err
	}
	if val, ok := v.(validator); ok {
		return val.Validate(r.Context())
	}
	return nil
}

// CheckJSONContentType refuses (415) a body declared as anything but JSON:
// application/json, or a type ending in +json, with any parameters. A
// request with no Content-Type at all is taken as JSON: first-generation
// gateways and scripts written against earlier versions send none, and
// their bodies are still read by the strict JSON rules. What it catches is
// a body sent as a form (curl -d without a Content-Type header), which would
// otherwise be answered with a puzzling type error about the JSON.
func CheckJSONContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if strings.TrimSpace(ct) == "" {
		return nil
	}
	mediaType, _, err := mime.ParseMediaType(ct)
	if err == nil && (mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")) {
		return nil
	}
	if len(ct) > 100 {
		ct = ct[:100] + "…"
	}
	return Errorf(http.StatusUnsupportedMediaType,
		"Content-Type must be application/json, not %q: send the body as JSON with the header Content-Type: application/json (with curl: -H 'Content-Type: application/json', or --json)", ct)
}

// ReadBody reads the whole body, refusing more than limit bytes (413).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, err
		}
		return nil, BadRequest("request body could not be read: %v", err)
	}
	return data, nil
}

// DecodeJSON checks data against v's type, then decodes it into v.
func DecodeJSON(data []byte, v any, strict bool) error {
	if err := CheckJSON(data, reflect.TypeOf(v), strict); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return JSONError(err)
	}
	return nil
}

// JSONError words an encoding/json error that CheckJSON let through (it
// should let none through; this is the safety net).
func JSONError(err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return BadRequest("request body is empty: send a JSON document")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("request body is not valid JSON: it ends too early")
	case errors.As(err, &syntaxErr):
		return BadRequest("request body is not valid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return BadRequest("request body must be %s, not %s", jsonKind(typeErr), typeErr.Value)
		}
		return BadRequest("%s: must be %s, not %s", typeErr.Field, jsonKind(typeErr), typeErr.Value)
	}
	return BadRequest("request body could not be decoded: %v", err)
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

// FieldErrors collects validation failures as "path: problem" strings. It
// keeps the first maxListedErrors and counts the rest, so that a body of
// thousands of bad items costs a bounded answer and linear work.
type FieldErrors struct {
	list []string
	more int
}

// maxListedErrors is how many problems one 400 answer lists.
const maxListedErrors = 20

// Add records a problem of the field at path.
func (f *FieldErrors) Add(path, format string, a ...any) {
	if len(f.list) >= maxListedErrors {
		f.more++
		return
	}
	f.list = append(f.list, path+": "+fmt.Sprintf(format, a...))
}

// Err is a 400 listing the problems, or nil when there are none.
func (f *FieldErrors) Err() error {
	if len(f.list) == 0 {
		return nil
	}
	msg := strings.Join(f.list, "; ")
	if f.more > 0 {
		msg += fmt.Sprintf("; and %d more", f.more)
	}
	return BadRequest("%s", msg)
}

// CheckText checks a free-text field: required or not, at most max
// characters, and no control characters.
func CheckText(errs *FieldErrors, path, v string, required bool, max int) {
	switch {
	case v == "" && required:
		errs.Add(path, "is required")
	case !utf8.ValidString(v):
		errs.Add(path, "must be valid UTF-8")
	case utf8.RuneCountInString(v) > max:
		errs.Add(path, "must be at most %d characters", max)
	case strings.ContainsFunc(v, IsControl):
		errs.Add(path, "must not contain control characters")
	}
}

// IsControl reports the control characters free text may not hold (tab and
// newline are allowed).
func IsControl(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' || r == 0x7f }
