package api

import (
	"bytes"
	"container/list"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/store"
)

// apiJSONCache keeps APIs as answered (JSON, secrets masked), each for the
// state it was encoded from (store.APIRef), within a byte budget, least
// recently used first out. A page of 100 full APIs is some 300 KB of JSON:
// copying it is a small part of the cost of reading and encoding it. An
// entry is used only while its ref is the API's current one, so a change,
// here or on another replica, is never answered stale.
type apiJSONCache struct {
	mu    sync.Mutex
	max   int
	size  int
	order *list.List // of *apiJSONEntry, most recently used first
	byID  map[string]*list.Element
}

type apiJSONEntry struct {
	ref  store.APIRef
	data []byte
}

// apiJSONCacheBytes bounds the cache: about 10,000 APIs of 10 operations.
const apiJSONCacheBytes = 32 << 20

func newAPIJSONCache(max int) *apiJSONCache {
	return &apiJSONCache{max: max, order: list.New(), byID: map[string]*list.Element{}}
}

// get returns the API's JSON at ref, if kept.
func (c *apiJSONCache) get(ref store.APIRef) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[ref.ID]
	if !ok {
		return nil, false
	}
	e := el.Value.(*apiJSONEntry)
	if !e.ref.UpdatedAt.Equal(ref.UpdatedAt) {
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.data, true
}

// put keeps data as the API's JSON at ref, replacing an older state.
func (c *apiJSONCache) put(ref store.APIRef, data []byte) {
	if len(data) > c.max/16 {
		return // one huge API must not push out everything else
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[ref.ID]; ok {
		c.size -= len(el.Value.(*apiJSONEntry).data)
		c.order.Remove(el)
	}
	c.byID[ref.ID] = c.order.PushFront(&apiJSONEntry{ref, data})
	c.size += len(data)
	for c.size > c.max {
		e := c.order.Remove(c.order.Back()).(*apiJSONEntry)
		delete(c.byID, e.ref.ID)
		c.size -= len(e.data)
	}
}

// encodeAPI is the API as answered, as httpx.WriteJSON would encode it (without
// the final newline), kept in the cache.
// DropCachedAnswers forgets the APIs kept as answered: the next page reads
// each from the store again (tests cover both paths with it).
func (s *Server) DropCachedAnswers() { s.apiJSON = newAPIJSONCache(apiJSONCacheBytes) }

func (s *Server) encodeAPI(a *store.API) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(masked(a)); err != nil {
		return nil, err
	}
	data := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	s.apiJSON.put(store.APIRef{ID: a.ID, UpdatedAt: a.UpdatedAt}, data)
	return data, nil
}

// writeAPI answers with one API.
func (s *Server) writeAPI(w http.ResponseWriter, status int, a *store.API) error {
	data, err := s.encodeAPI(a)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
	return nil
}

// listAPIs answers a page of APIs: the ones kept in the cache at their
// current state are copied, the others read and encoded (and kept).
func (s *Server) listAPIs(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	kept := map[string][]byte{} // taken while the page is read: an eviction meanwhile costs nothing
	refs, loaded, total, err := s.store.APIsPage(r.Context(), p.OrganizationID, r.URL.Query().Get("projectId"), store.Page(page),
		func(ref store.APIRef) bool {
			data, ok := s.apiJSON.get(ref)
			if ok {
				kept[ref.ID] = data
			}
			return ok
		})
	if err != nil {
		return err
	}
	var items bytes.Buffer
	count := 0
	for _, ref := range refs {
		data, ok := kept[ref.ID]
		if !ok {
			a := loaded[ref.ID]
			if a == nil {
				continue // cannot happen: read in the same transaction
			}
			if data, err = s.encodeAPI(a); err != nil {
				return err
			}
		}
		if count > 0 {
			items.WriteByte(',')
		}
		items.Write(data)
		count++
	}
	pag, _ := json.Marshal(httpx.Pagination{Total: total, Offset: page.Offset, Limit: page.Limit})
	var b bytes.Buffer
	b.Grow(items.Len() + 100)
	b.WriteString(`{"count":` + strconv.Itoa(count) + `,"list":[`)
	b.Write(items.Bytes())
	b.WriteString(`],"pagination":`)
	b.Write(pag)
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b.Bytes())
	return nil
}
