package httpx

import (
	"net/http"
	"strconv"
)

// Pagination bounds of the contract.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// Page is one page of a list: what ParsePage read from the query.
type Page struct {
	Offset int
	Limit  int
}

// ParsePage reads ?offset= and ?limit=.
func ParsePage(r *http.Request) (Page, error) {
	p := Page{Limit: defaultLimit}
	q := r.URL.Query()
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, BadRequest("offset: must be a whole number of 0 or more, not %q", s)
		}
		p.Offset = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return p, BadRequest("limit: must be a whole number from 1 to %d, not %q", maxLimit, s)
		}
		p.Limit = n
	}
	return p, nil
}

// Pagination is the list envelope's account of the page.
type Pagination struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// List is the contract's list envelope. List is never null.
type List[T any] struct {
	Count      int        `json:"count"`
	List       []T        `json:"list"`
	Pagination Pagination `json:"pagination"`
}

// NewList wraps one page of a list, total being the length of the whole.
func NewList[T any](list []T, total int, p Page) List[T] {
	if list == nil {
		list = []T{}
	}
	return List[T]{Count: len(list), List: list, Pagination: Pagination{Total: total, Offset: p.Offset, Limit: p.Limit}}
}

// PageOf cuts a page out of a whole list (for lists bounded by the number
// of gateways of one API, which are loaded whole).
func PageOf[T any](all []T, page Page) List[T] {
	start := min(page.Offset, len(all))
	end := min(start+page.Limit, len(all))
	return NewList(all[start:end], len(all), page)
}
