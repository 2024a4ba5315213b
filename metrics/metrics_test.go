package metrics

import (
	"testing"
	"unicode/utf8"
)

// TestLabelsAreValidUTF8: a label value holding bytes that are not UTF-8
// (a gateway's text cut inside a character) made Prometheus refuse the
// whole scrape. Every value comes out valid UTF-8 and escaped.
func TestLabelsAreValidUTF8(t *testing.T) {
	got := Labels("a", "€€\xe2\x82", "b", "q\"\\\nx")
	if !utf8.ValidString(got) {
		t.Fatalf("labels %q are not valid UTF-8", got)
	}
	if want := `{a="€€` + "\uFFFD" + `",b="q\"\\\nx"}`; got != want {
		t.Fatalf("labels %s, want %s", got, want)
	}
}
