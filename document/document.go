// Package document renders the API documents gateways download, in the form
// each generation of gateway understands, and keeps them rendered.
//
// A first-generation gateway (contract §4) loads kind http/rest; a second
// generation gateway (contract §6) loads kind RestApi. Both are rendered
// from an immutable revision, so a document never goes stale: Cache renders
// each one once, even when a whole fleet asks for it at the same moment,
// and keeps it deflated, ready to be copied into any number of zips.
//
// Rendering is bounded: request bodies nest at most 32 levels, which bounds
// what YAML indentation can add, and a document larger than MaxBytes is
// refused (ErrTooLarge) rather than built.
package document

import (
	"bytes"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Generation is a generation of gateways, by the document form it loads.
type Generation int

// The two generations of gateways.
const (
	Gen1 Generation = 1 // late-2025 gateways: kind http/rest (contract §3-§4)
	Gen2 Generation = 2 // 2026 gateways: kind RestApi (contract §6)
)

func (g Generation) String() string { return fmt.Sprintf("gen%d", int(g)) }

// MaxBytes is the largest document rendered. With bodies of at most 1 MiB
// (the default) nested at most 32 levels, a document stays under 16 times
// its definition's size, so this is only reached by a larger configured
// body limit.
const MaxBytes = 16 << 20

// ErrTooLarge is returned for a document that would exceed MaxBytes.
var ErrTooLarge = fmt.Errorf("the gateway document would be larger than %d MiB: make the API definition smaller (fewer operations or smaller policy parameters)", MaxBytes>>20)

// limitedBuffer is a buffer that refuses to grow past max.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		b.over = true
		return 0, ErrTooLarge
	}
	return b.Buffer.Write(p)
}

// encodeYAML encodes v with two-space indentation, refusing more than
// MaxBytes of output.
func encodeYAML(v any) ([]byte, error) {
	buf := &limitedBuffer{max: MaxBytes}
	enc := yaml.NewEncoder(buf)
	enc.SetIndent(2)
	err := enc.Encode(v)
	if err == nil {
		err = enc.Close()
	}
	if buf.over {
		return nil, ErrTooLarge
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// IsTooLarge reports whether err is, or wraps, ErrTooLarge.
func IsTooLarge(err error) bool { return errors.Is(err, ErrTooLarge) }
