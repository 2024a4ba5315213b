package store

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestSecretRefs finds every {{ secret "name" }} in any string of a
// definition, policy parameters included, once each and sorted.
func TestSecretRefs(t *testing.T) {
	a := &API{Name: "n", Description: `{{ secret "b-one" }} and {{secret "a-two"}}`,
		BackendServices: []BackendService{{Name: "x", Endpoints: []Endpoint{{URL: "https://h/{{ secret \"ignored\" "}}}},
		Operations: []Operation{{Request: &OperationRequest{Method: "GET", Path: "/", RequestPolicies: []Policy{
			{Name: "set-header", Params: json.RawMessage(`{"headers":[{"value":"Bearer {{  secret  \"c-three\"  }}"}]}`)},
		}}}},
		Security: &Security{APIKey: &APIKey{Header: `{{ secret "b-one" }}`}},
	}
	got, err := SecretRefs(a)
	if want := []string{"a-two", "b-one", "c-three"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("SecretRefs = %q, %v; want %q", got, err, want)
	}
	if got, err := SecretRefs(&API{Name: "plain", Description: "a secret word"}); err != nil || len(got) != 0 {
		t.Fatalf("SecretRefs of a definition without references = %q, %v", got, err)
	}
}
