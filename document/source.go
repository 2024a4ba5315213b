package document

import (
	"context"
	"fmt"

	"platform-api/store"
)

// Source renders the revisions of a store for gateways, each form once for
// the whole fleet (a Cache in front of the renderer). The public API warms
// it when a deploy checks a revision; the gateway API serves from it.
type Source struct {
	store *store.DB
	cache *Cache
}

// CacheBytes bounds the rendered documents a Source keeps in memory.
const CacheBytes = 64 << 20

// NewSource renders revisions of db, keeping at most maxBytes of documents.
func NewSource(db *store.DB, maxBytes int) *Source {
	return &Source{store: db, cache: NewCache(maxBytes)}
}

// GenerationOf is the document generation a gateway gets: Gen2 for one that
// posted a manifest.
func GenerationOf(gen2 bool) Generation {
	if gen2 {
		return Gen2
	}
	return Gen1
}

// Get returns the rendered document of a revision in the form of a gateway
// generation (the second names the deployment's vhost), from the cache or
// rendered once for every concurrent caller.
func (s *Source) Get(ctx context.Context, apiID, revisionID string, gen Generation, vhost string) (*Entry, error) {
	if gen == Gen1 {
		vhost = ""
	}
	// The render outlives a caller that gives up: others may wait on it.
	ctx = context.WithoutCancel(ctx)
	return s.cache.Get(Key{Revision: revisionID, Generation: gen, Vhost: vhost}, func() (*Entry, error) {
		rev, err := s.store.Revision(ctx, apiID, revisionID)
		if err != nil {
			return nil, err
		}
		return s.Render(rev, gen, vhost)
	})
}

// Renders counts the documents rendered through the cache.
func (s *Source) Renders() int64 { return s.cache.Renders }

// Keep puts an entry rendered by the caller (Render) in the cache.
func (s *Source) Keep(rev *store.Revision, gen Generation, vhost string, e *Entry) {
	if gen == Gen1 {
		vhost = ""
	}
	s.cache.Get(Key{Revision: rev.ID, Generation: gen, Vhost: vhost}, func() (*Entry, error) { return e, nil })
}

// Render renders a revision for the gateways it is deployed to, bypassing
// the cache: the only place secrets are opened.
func (s *Source) Render(rev *store.Revision, gen Generation, vhost string) (*Entry, error) {
	if err := s.store.OpenSecrets(rev.API); err != nil {
		return nil, err
	}
	var doc []byte
	var err error
	if gen == Gen2 {
		doc, err = RenderRestAPI(rev.API, vhost)
	} else {
		doc, err = RenderHTTPRest(rev.API)
	}
	if err != nil {
		return nil, fmt.Errorf("render API %s revision %d: %w", rev.APIID, rev.Number, err)
	}
	return NewEntry(doc, rev.CreatedAt)
}
