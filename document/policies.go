package document

import (
	"fmt"
	"strings"

	"platform-api/store"
)

// API-level policies of the second-generation document (contract §7). A
// gateway applies an API only if it has every policy the document names,
// so a deploy to a gateway whose manifest lacks one is refused
// (MissingPolicies). A feature that a gateway enforces through a policy
// adds its entry to apiPolicies: the document then carries it, and the
// deploy check asks for it.

// apiPolicy is an API-level policy that the document carries when the API
// needs it.
type apiPolicy struct {
	name, version string
	// params returns the policy's params for the API and whether the API
	// needs the policy; an error says why the API cannot have it.
	params func(*store.API) (map[string]any, bool, error)
}

// apiPolicies are the API-level policies, in the document's order.
var apiPolicies = []apiPolicy{
	{name: "api-key-auth", version: policyVersion, params: apiKeyAuth},
	{name: "subscription-validation", version: policyVersion, params: subscriptionValidation},
}

// SubscriptionValidationPolicy names the subscription-validation policy as
// manifests do.
const SubscriptionValidationPolicy = "subscription-validation@" + policyVersion

// subscriptionValidation: an API with "subscriptionValidation": true admits
// only callers that send an active subscription's token, in the
// Subscription-Key header.
func subscriptionValidation(a *store.API) (map[string]any, bool, error) {
	if !a.SubscriptionValidation {
		return nil, false, nil
	}
	return map[string]any{"subscriptionKeyHeader": "Subscription-Key"}, true, nil
}

// apiKeyAuth: an API whose security and security.apiKey are enabled is
// protected by keys, read from its header, or from its query parameter
// when it names no header (newer versions of the policy read headers only).
func apiKeyAuth(a *store.API) (map[string]any, bool, error) {
	s := a.Security
	if s == nil || !s.Enabled || s.APIKey == nil || !s.APIKey.Enabled {
		return nil, false, nil
	}
	switch k := s.APIKey; {
	case k.Header != "":
		return map[string]any{"key": k.Header, "in": "header"}, true, nil
	case k.Query != "":
		return map[string]any{"key": k.Query, "in": "query"}, true, nil
	}
	return nil, true, fmt.Errorf("security.apiKey names no header nor query parameter: a second-generation gateway reads keys from one of them")
}

// documentAPIPolicies are the API-level policies of a's document.
func documentAPIPolicies(a *store.API) ([]restPolicy, error) {
	var out []restPolicy
	for _, p := range apiPolicies {
		params, needed, err := p.params(a)
		if err != nil {
			return nil, err
		}
		if needed {
			out = append(out, restPolicy{Name: p.name, Version: p.version, Params: params})
		}
	}
	return out, nil
}

// NeededPolicies returns the API-level policies a second-generation
// gateway needs to run a, as name@version.
func NeededPolicies(a *store.API) ([]string, error) {
	ps, err := documentAPIPolicies(a)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name + "@" + p.Version
	}
	return out, nil
}

// MissingPolicies returns those of needed (name@version) that a manifest
// listing have (name@version, or a bare name for any version) lacks. A
// version matches by its major part: v1 is had by v1, v1.2 or 1.2.0.
func MissingPolicies(needed, have []string) []string {
	var missing []string
	for _, n := range needed {
		name, version, _ := strings.Cut(n, "@")
		found := false
		for _, h := range have {
			hn, hv, hasVersion := strings.Cut(h, "@")
			if hn == name && (!hasVersion || majorOf(hv) == majorOf(version)) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, n)
		}
	}
	return missing
}

func majorOf(v string) string {
	v = strings.TrimPrefix(strings.ToLower(v), "v")
	major, _, _ := strings.Cut(v, ".")
	return major
}
