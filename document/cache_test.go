package document

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// TestConcurrentFirstGetsRenderOnce: a fleet asking for a new revision at
// once used to render it once per gateway (ten gateways, ten renders of a
// 785 MB document). Every caller now waits for the one render.
func TestConcurrentFirstGetsRenderOnce(t *testing.T) {
	c := NewCache(1 << 20)
	key := Key{Revision: "r1", Generation: Gen1}
	// The render waits until every caller has started, so the others
	// arrive while it is in progress.
	var started, wg sync.WaitGroup
	results := make([]*Entry, 10)
	started.Add(len(results))
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			e, err := c.Get(key, func() (*Entry, error) {
				started.Wait()
				return NewEntry([]byte("kind: http/rest\n"), time.Now())
			})
			if err != nil {
				t.Error(err)
			}
			results[i] = e
		}()
	}
	wg.Wait()
	if c.Renders != 1 {
		t.Fatalf("%d renders", c.Renders)
	}
	for _, e := range results {
		if e != results[0] {
			t.Fatal("callers got different entries")
		}
	}
}

func TestFailedRenderIsNotCached(t *testing.T) {
	c := NewCache(1 << 20)
	key := Key{Revision: "r1", Generation: Gen1}
	if _, err := c.Get(key, func() (*Entry, error) { return nil, errors.New("boom") }); err == nil {
		t.Fatal("no error")
	}
	if _, err := c.Get(key, func() (*Entry, error) { return NewEntry([]byte("ok"), time.Now()) }); err != nil {
		t.Fatal(err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	c := NewCache(10_000)
	doc := bytes.Repeat([]byte("x: y\n"), 1000) // 5,000 bytes, and a small deflated form
	for i := range 10 {
		c.Get(Key{Revision: string(rune('a' + i))}, func() (*Entry, error) { return NewEntry(doc, time.Now()) })
	}
	if c.bytes > 10_000 || len(c.m) > 2 {
		t.Fatalf("cache holds %d bytes in %d entries", c.bytes, len(c.m))
	}
}

// TestZipHoldsTheDocuments reads a zip written from deflated entries with
// archive/zip, checksums included.
func TestZipHoldsTheDocuments(t *testing.T) {
	a, _ := NewEntry([]byte("kind: http/rest\nname: a\n"), time.Now())
	b, _ := NewEntry(bytes.Repeat([]byte("long line\n"), 5000), time.Now())
	var buf bytes.Buffer
	if err := WriteZip(&buf, []Named{{"api-a.yaml", a}, {"api-b.yaml", b}}); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []*Entry{a, b} {
		rc, err := zr.File[i].Open()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc) // checks the CRC at EOF
		if err != nil || !bytes.Equal(got, want.YAML) {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}

// TestOneEntryZipIsMadeOnce: the archive a first-generation gateway
// downloads after each api.deployed is made once per document and served
// as the same bytes to the whole fleet; it is a valid zip of the document
// under the name asked for, and another name gets its own archive.
func TestOneEntryZipIsMadeOnce(t *testing.T) {
	e, _ := NewEntry(bytes.Repeat([]byte("kind: http/rest\n"), 300), time.Now())
	first, err := e.Zip("api-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := e.Zip("api-a.yaml")
	if &first[0] != &again[0] {
		t.Fatal("the second download made the archive again")
	}
	other, _ := e.Zip("api-b.yaml")
	for name, b := range map[string][]byte{"api-a.yaml": first, "api-b.yaml": other} {
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if len(zr.File) != 1 || zr.File[0].Name != name {
			t.Fatalf("%s: entries %v", name, zr.File)
		}
		rc, err := zr.File[0].Open()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, e.YAML) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
