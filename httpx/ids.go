package httpx

import "net/http"

// IsID reports whether s is a UUID in canonical form (8-4-4-4-12 lower-case
// hex digits), the only form this server takes an id in. Accepting other
// spellings would let one resource exist under two ids.
func IsID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// IDDescription is added to every refusal of an id not in canonical form.
const IDDescription = "ids are UUIDs in canonical lower-case form"

// pathIDs names the path wildcards that hold ids, with what they name.
var pathIDs = []struct{ name, what string }{
	{"projectId", "project"}, {"apiId", "API"}, {"gatewayId", "gateway"}, {"tokenId", "token"},
	{"planId", "subscription plan"}, {"subscriptionId", "subscription"},
}

// queryIDs are the query parameters that hold ids.
var queryIDs = []string{"projectId", "gatewayId", "revisionId"}

// CheckIDs refuses a request whose path or query holds an id that is not in
// canonical form: 404 for the path (no resource has such an id), 400 for
// the query. Every authenticated route runs it before its handler.
func CheckIDs(r *http.Request) error {
	for _, p := range pathIDs {
		if v := r.PathValue(p.name); v != "" && !IsID(v) {
			return Errorf(http.StatusNotFound, "%s %s not found: %s", p.what, v, IDDescription)
		}
	}
	q := r.URL.Query()
	for _, name := range queryIDs {
		if v := q.Get(name); v != "" && !IsID(v) {
			return BadRequest("%s: must be a UUID in canonical lower-case form, not %q", name, v)
		}
	}
	return nil
}
