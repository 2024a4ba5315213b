package httpx

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// CheckJSON reads data as exactly one JSON value and checks it against the
// Go type it is about to be decoded into, before encoding/json sees it. It
// exists because encoding/json is lenient where a control plane must not be:
// it matches field names without regard to case, ignores unknown fields,
// replaces invalid UTF-8 and lone surrogates with U+FFFD, accepts any
// nesting depth, and names a type error by Go struct and without array
// indexes. CheckJSON refuses all of these, names the JSON path
// (backend-services[0].retries), and runs in one pass, linear in the body.
//
// Rules: object keys must be exact field names (json tags), each at most
// once (with strict false, as for bodies from gateways, which may carry
// fields the contract does not list, other keys are allowed and checked as
// free-form, but a key that differs from a field name only in case is still
// refused, so encoding/json's case folding can never pick it up); integers must be whole numbers in range; strings must be valid
// UTF-8 with paired surrogate escapes; null is accepted wherever
// encoding/json accepts it, except as the whole body; free-form values (any,
// json.RawMessage, maps) are checked for syntax, depth and text only.
func CheckJSON(data []byte, t reflect.Type, strict bool) error {
	return CheckJSONDepth(data, t, strict, MaxJSONDepth)
}

// CheckJSONDepth is CheckJSON with another nesting limit, for bodies that
// are stored or rendered in no form (a manifest's policy definitions carry
// JSON schemas that nest deeper than API definitions do).
func CheckJSONDepth(data []byte, t reflect.Type, strict bool, maxDepth int) error {
	c := &shapeChecker{data: data, strict: strict, maxDepth: maxDepth}
	c.space()
	if c.pos == len(data) {
		return BadRequest("request body is empty: send a JSON document")
	}
	if c.peek() == 'n' {
		return BadRequest("request body must be a JSON %s, not null", shapeName(t))
	}
	if err := c.value(t, ""); err != nil {
		return err
	}
	c.space()
	if c.pos != len(data) {
		return BadRequest("request body must hold exactly one JSON value; found more after it at byte %d", c.pos)
	}
	return nil
}

// MaxJSONDepth is how deeply arrays and objects may nest in any body. Real
// API definitions stay under 15 (a policy's parameters included); the cap
// bounds the cost of every later pass over the value, and the indentation a
// YAML rendering adds per level.
const MaxJSONDepth = 32

type shapeChecker struct {
	data     []byte
	pos      int
	depth    int
	strict   bool // unknown object keys are errors
	maxDepth int
}

func (c *shapeChecker) peek() byte {
	if c.pos < len(c.data) {
		return c.data[c.pos]
	}
	return 0
}

func (c *shapeChecker) space() {
	for c.pos < len(c.data) {
		switch c.data[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *shapeChecker) syntax(what string) error {
	if c.pos >= len(c.data) {
		return BadRequest("request body is not valid JSON: it ends too early")
	}
	return BadRequest("request body is not valid JSON at byte %d: %s", c.pos, what)
}

// at names a path for a message; the root is "request body".
func at(path string) string {
	if path == "" {
		return "request body"
	}
	return path
}

// value checks one value at path against t (nil: any JSON).
func (c *shapeChecker) value(t reflect.Type, path string) error {
	c.space()
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType || t != nil && t.Kind() == reflect.Interface {
		t = nil // free-form
	}
	b := c.peek()
	if b == 'n' {
		return c.literal("null")
	}
	want := shapeOf(t)
	got := jsonKindOf(b)
	if got == "" {
		return c.syntax(fmt.Sprintf("unexpected character %q", b))
	}
	if want != "" && want != got && !(want == "an integer" && got == "a number") {
		if path == "" {
			return BadRequest("request body must be %s, not %s", want, got)
		}
		return BadRequest("%s: must be %s, not %s", path, want, got)
	}
	switch got {
	case "an object":
		return c.object(t, path)
	case "an array":
		return c.array(t, path)
	case "a string":
		return c.str(path)
	case "a boolean":
		if b == 't' {
			return c.literal("true")
		}
		return c.literal("false")
	default:
		return c.number(t, path)
	}
}

func jsonKindOf(b byte) string {
	switch {
	case b == '{':
		return "an object"
	case b == '[':
		return "an array"
	case b == '"':
		return "a string"
	case b == 't' || b == 'f':
		return "a boolean"
	case b == '-' || b >= '0' && b <= '9':
		return "a number"
	}
	return ""
}

var (
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	timeType       = reflect.TypeFor[time.Time]()
)

// shapeOf is the JSON kind a Go type decodes from; "" means any.
func shapeOf(t reflect.Type) string {
	if t == nil || t == rawMessageType {
		return ""
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == timeType {
			return "a string"
		}
		return "an object"
	case reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return ""
}

// shapeName words shapeOf for the whole body.
func shapeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s := shapeOf(t); s != "" {
		return strings.TrimPrefix(strings.TrimPrefix(s, "an "), "a ")
	}
	return "value"
}

func (c *shapeChecker) literal(word string) error {
	if !strings.HasPrefix(string(c.data[c.pos:min(len(c.data), c.pos+len(word))]), word) {
		return c.syntax("expected " + word)
	}
	c.pos += len(word)
	return nil
}

func (c *shapeChecker) enter(path string) error {
	c.depth++
	if c.depth > c.maxDepth {
		return BadRequest("%s: nests arrays and objects deeper than %d levels", at(path), c.maxDepth)
	}
	return nil
}

func (c *shapeChecker) object(t reflect.Type, path string) error {
	if err := c.enter(path); err != nil {
		return err
	}
	c.pos++ // {
	var fields *structFields
	var elem reflect.Type // map values
	if t != nil && t.Kind() == reflect.Struct {
		fields = fieldsOf(t)
	} else if t != nil && t.Kind() == reflect.Map {
		elem = t.Elem()
	}
	var seen []bool
	if fields != nil {
		seen = make([]bool, len(fields.list))
	}
	c.space()
	if c.peek() == '}' {
		c.pos++
		c.depth--
		return nil
	}
	for {
		c.space()
		if c.peek() != '"' {
			return c.syntax("expected a field name in double quotes")
		}
		start := c.pos
		if err := c.str(path); err != nil {
			return err
		}
		key, err := strconv.Unquote(string(c.data[start:c.pos]))
		if err != nil {
			return c.syntax("bad field name")
		}
		child := joinPath(path, key)
		var ft reflect.Type = elem
		if fields != nil {
			i, ok := fields.index[key]
			switch {
			case !ok && (c.strict || fields.foldsTo(key) != ""):
				return unknownField(child, key, fields)
			case !ok:
				ft = nil // an extra field: any JSON
			case seen[i]:
				return BadRequest("%s: appears twice in the same object", child)
			default:
				seen[i] = true
				ft = fields.list[i]
			}
		}
		c.space()
		if c.peek() != ':' {
			return c.syntax("expected ':' after a field name")
		}
		c.pos++
		if err := c.value(ft, child); err != nil {
			return err
		}
		c.space()
		switch c.peek() {
		case ',':
			c.pos++
		case '}':
			c.pos++
			c.depth--
			return nil
		default:
			return c.syntax("expected ',' or '}' in an object")
		}
	}
}

func unknownField(path, key string, f *structFields) error {
	if name := f.foldsTo(key); name != "" {
		return BadRequest("%s: unknown field; field names are case-sensitive: did you mean %q?", path, name)
	}
	return BadRequest("%s: unknown field", path)
}

// foldsTo returns the field name key matches only without regard to case.
func (f *structFields) foldsTo(key string) string {
	for name := range f.index {
		if name != key && strings.EqualFold(name, key) {
			return name
		}
	}
	return ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *shapeChecker) array(t reflect.Type, path string) error {
	if err := c.enter(path); err != nil {
		return err
	}
	c.pos++ // [
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		elem = t.Elem()
	}
	c.space()
	if c.peek() == ']' {
		c.pos++
		c.depth--
		return nil
	}
	for i := 0; ; i++ {
		if err := c.value(elem, path+"["+strconv.Itoa(i)+"]"); err != nil {
			return err
		}
		c.space()
		switch c.peek() {
		case ',':
			c.pos++
		case ']':
			c.pos++
			c.depth--
			return nil
		default:
			return c.syntax("expected ',' or ']' in an array")
		}
	}
}

// str checks a string: valid UTF-8, valid escapes, surrogate escapes in
// pairs. encoding/json would turn each of these faults into U+FFFD silently.
func (c *shapeChecker) str(path string) error {
	c.pos++ // opening quote
	for c.pos < len(c.data) {
		b := c.data[c.pos]
		switch {
		case b == '"':
			c.pos++
			return nil
		case b < 0x20:
			return c.syntax("control character in a string (escape it)")
		case b == '\\':
			if err := c.escape(path); err != nil {
				return err
			}
		case b < utf8.RuneSelf:
			c.pos++
		default:
			r, n := utf8.DecodeRune(c.data[c.pos:])
			if r == utf8.RuneError && n <= 1 {
				return BadRequest("%s: holds bytes that are not valid UTF-8 (at byte %d); send UTF-8 text", at(path), c.pos)
			}
			c.pos += n
		}
	}
	return c.syntax("unterminated string")
}

func (c *shapeChecker) escape(path string) error {
	c.pos++ // backslash
	switch c.peek() {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		c.pos++
		return nil
	case 'u':
	default:
		return c.syntax("bad escape in a string")
	}
	r, ok := c.hex4()
	if !ok {
		return c.syntax(`bad \u escape in a string`)
	}
	switch {
	case r == 0:
		// No text of this server may hold NUL (PostgreSQL cannot store it).
		return BadRequest("%s: holds \\u0000 (NUL), a control character no text here may hold; remove it", at(path))
	case r >= 0xDC00 && r <= 0xDFFF:
		return BadRequest("%s: holds a lone low surrogate \\u%04x; send valid UTF-16 escapes or UTF-8 text", at(path), r)
	case r >= 0xD800 && r <= 0xDBFF:
		if c.pos+1 < len(c.data) && c.data[c.pos] == '\\' && c.data[c.pos+1] == 'u' {
			c.pos++
			if lo, ok := c.hex4(); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				return nil
			}
		}
		return BadRequest("%s: holds a lone high surrogate \\u%04x; send valid UTF-16 escapes or UTF-8 text", at(path), r)
	}
	return nil
}

// hex4 reads "uXXXX" at c.pos.
func (c *shapeChecker) hex4() (rune, bool) {
	if c.pos+5 > len(c.data) || c.data[c.pos] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(c.data[c.pos+1:c.pos+5]), 16, 16)
	if err != nil {
		return 0, false
	}
	c.pos += 5
	return rune(n), true
}

func (c *shapeChecker) number(t reflect.Type, path string) error {
	start := c.pos
	if c.peek() == '-' {
		c.pos++
	}
	digits := func() int {
		n := 0
		for c.pos < len(c.data) && c.data[c.pos] >= '0' && c.data[c.pos] <= '9' {
			c.pos++
			n++
		}
		return n
	}
	intStart := c.pos
	if n := digits(); n == 0 || n > 1 && c.data[intStart] == '0' {
		return c.syntax("bad number")
	}
	integer := true
	if c.peek() == '.' {
		c.pos++
		integer = false
		if digits() == 0 {
			return c.syntax("bad number")
		}
	}
	if b := c.peek(); b == 'e' || b == 'E' {
		c.pos++
		integer = false
		if b := c.peek(); b == '+' || b == '-' {
			c.pos++
		}
		if digits() == 0 {
			return c.syntax("bad number")
		}
	}
	if t == nil {
		return nil
	}
	text := string(c.data[start:c.pos])
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		lo, hi := intRange(t)
		n, err := strconv.ParseInt(text, 10, 64)
		if !integer || err != nil || n < lo || n > hi {
			return BadRequest("%s: must be a whole number from %d to %d, not %s", at(path), lo, hi, text)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(text, 10, 64)
		if hi := uint64(1)<<t.Bits() - 1; !integer || err != nil || n > hi {
			return BadRequest("%s: must be a whole number from 0 to %d, not %s", at(path), hi, text)
		}
	case reflect.Float32, reflect.Float64:
		if f, err := strconv.ParseFloat(text, t.Bits()); err != nil || math.IsInf(f, 0) {
			return BadRequest("%s: the number %s is out of range", at(path), text)
		}
	}
	return nil
}

func intRange(t reflect.Type) (int64, int64) {
	bits := t.Bits()
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

// structFields are a struct's JSON fields, embedded structs flattened and
// outer fields shadowing inner ones, as encoding/json resolves them.
type structFields struct {
	index map[string]int
	list  []reflect.Type
}

var fieldCache sync.Map // reflect.Type -> *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{index: map[string]int{}}
	collectFields(t, f, 0, map[string]int{})
	fieldCache.Store(t, f)
	return f
}

// collectFields adds t's fields at embedding depth; depths records the
// depth each name was found at, so that a shallower field wins.
func collectFields(t reflect.Type, f *structFields, depth int, depths map[string]int) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			et := sf.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				collectFields(et, f, depth+1, depths)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if d, ok := depths[name]; ok && d <= depth {
			continue
		}
		depths[name] = depth
		if i, ok := f.index[name]; ok {
			f.list[i] = sf.Type
			continue
		}
		f.index[name] = len(f.list)
		f.list = append(f.list, sf.Type)
	}
}
