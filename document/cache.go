package document

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"container/list"
	"hash/crc32"
	"io"
	"sync"
	"time"
)

// Entry is one rendered document, kept both as YAML and deflated (the form
// a zip holds), so that serving it to a fleet costs copies, not renders.
type Entry struct {
	YAML     []byte
	deflated []byte
	crc      uint32
	Modified time.Time // when the revision was made

	// zip is the entry alone in a zip, made once by Zip: what a
	// first-generation gateway downloads after each api.deployed.
	zipOnce sync.Once
	zipName string
	zip     []byte
	zipErr  error
}

// Key names one rendered document.
type Key struct {
	Revision   string
	Generation Generation
	// Vhost is the deployment's vhost, which the second generation's
	// document names; empty for the first generation.
	Vhost string
}

// NewEntry deflates a rendered document.
func NewEntry(doc []byte, modified time.Time) (*Entry, error) {
	var b bytes.Buffer
	fw, err := flate.NewWriter(&b, flate.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := fw.Write(doc); err != nil {
		return nil, err
	}
	if err := fw.Close(); err != nil {
		return nil, err
	}
	return &Entry{YAML: doc, deflated: bytes.Clone(b.Bytes()), crc: crc32.ChecksumIEEE(doc), Modified: modified}, nil
}

// size is what the entry holds, its zip (Zip) counted whether made yet or
// not: the deflated form again, and the zip's headers around it.
func (e *Entry) size() int { return len(e.YAML) + 2*len(e.deflated) + zipOverhead }

// zipOverhead bounds a one-entry zip's headers for a name like
// "api-<uuid>.yaml" (local and central headers with the name twice, the
// end record).
const zipOverhead = 256

// Zip returns a zip holding only this entry under name, made on the first
// call and kept: a fleet downloading a revision is answered with copies of
// one archive instead of an archive written per gateway. An entry belongs
// to one API, so its callers name it the same way each time; another name
// gets a zip of its own, not kept.
func (e *Entry) Zip(name string) ([]byte, error) {
	e.zipOnce.Do(func() {
		e.zipName = name
		e.zip, e.zipErr = e.zipAs(name)
	})
	if name != e.zipName {
		return e.zipAs(name)
	}
	return e.zip, e.zipErr
}

func (e *Entry) zipAs(name string) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(len(e.deflated) + zipOverhead)
	z := NewZipWriter(&b)
	if err := z.Add(name, e); err != nil {
		return nil, err
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Cache keeps rendered documents by key, up to a total size, dropping the
// least recently used. Get renders a missing document once: concurrent
// callers for the same key wait for the one render instead of each doing
// it (a fleet downloading a new revision used to render it once per
// gateway).
type Cache struct {
	max int

	mu    sync.Mutex
	m     map[Key]*cacheItem
	lru   list.List // of *cacheItem, most recent at the front
	bytes int

	// Renders counts documents rendered, for tests and metrics.
	Renders int64
}

type cacheItem struct {
	key   Key
	ready chan struct{} // closed once entry or err is set
	entry *Entry
	err   error
	elem  *list.Element // nil while rendering or once evicted
}

// NewCache makes a cache holding at most maxBytes of documents.
func NewCache(maxBytes int) *Cache {
	return &Cache{max: maxBytes, m: map[Key]*cacheItem{}}
}

// Get returns the document for key, calling render when it is not cached.
// A failed render is not cached.
func (c *Cache) Get(key Key, render func() (*Entry, error)) (*Entry, error) {
	c.mu.Lock()
	if it, ok := c.m[key]; ok {
		if it.elem != nil {
			c.lru.MoveToFront(it.elem)
		}
		c.mu.Unlock()
		<-it.ready
		return it.entry, it.err
	}
	it := &cacheItem{key: key, ready: make(chan struct{})}
	c.m[key] = it
	c.Renders++
	c.mu.Unlock()

	it.entry, it.err = render()
	close(it.ready)

	c.mu.Lock()
	defer c.mu.Unlock()
	if it.err != nil {
		delete(c.m, key)
		return nil, it.err
	}
	it.elem = c.lru.PushFront(it)
	c.bytes += it.entry.size()
	for c.bytes > c.max && c.lru.Len() > 1 {
		old := c.lru.Remove(c.lru.Back()).(*cacheItem)
		old.elem = nil
		delete(c.m, old.key)
		c.bytes -= old.entry.size()
	}
	return it.entry, nil
}

// Named is an entry under the name it has in an archive.
type Named struct {
	Name string
	*Entry
}

// ZipWriter writes a zip of entries as they come, copying their deflated
// form as it is (no compression per download). What it holds at once is
// one buffer of the zip writer, whatever the number of entries, so an
// answer of many documents is streamed instead of built in memory.
type ZipWriter struct{ zw *zip.Writer }

// NewZipWriter starts a zip on w.
func NewZipWriter(w io.Writer) *ZipWriter { return &ZipWriter{zw: zip.NewWriter(w)} }

// Add writes one entry under name.
func (z *ZipWriter) Add(name string, e *Entry) error {
	fw, err := z.zw.CreateRaw(&zip.FileHeader{
		Name:               name,
		Method:             zip.Deflate,
		CRC32:              e.crc,
		CompressedSize64:   uint64(len(e.deflated)),
		UncompressedSize64: uint64(len(e.YAML)),
		Modified:           e.Modified,
	})
	if err != nil {
		return err
	}
	_, err = fw.Write(e.deflated)
	return err
}

// Close writes the zip's central directory.
func (z *ZipWriter) Close() error { return z.zw.Close() }

// WriteZip writes a zip holding the entries.
func WriteZip(w io.Writer, entries []Named) error {
	z := NewZipWriter(w)
	for _, e := range entries {
		if err := z.Add(e.Name, e.Entry); err != nil {
			return err
		}
	}
	return z.Close()
}
