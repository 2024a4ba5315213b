package api

import (
	"context"
	"net/http"
	"strings"

	"platform-api/document"
	"platform-api/httpx"
	"platform-api/store"
)

// policiesPresent refuses a deploy to a second-generation gateway whose
// manifest lacks a policy the API needs (document.NeededPolicies): the
// gateway would refuse the API. First-generation gateways take no
// policies.
func (s *Server) policiesPresent(ctx context.Context, a *store.API, targets []store.DeployTarget) error {
	needed, needErr := document.NeededPolicies(a)
	if len(needed) == 0 && needErr == nil {
		return nil
	}
	ids := make([]string, len(targets))
	for i, t := range targets {
		ids[i] = t.GatewayID
	}
	manifests, err := s.store.Manifests(ctx, ids)
	if err != nil {
		return err
	}
	for _, t := range targets {
		m := manifests[t.GatewayID]
		if m == nil {
			continue
		}
		if needErr != nil {
			return httpx.BadRequest("gateway %s is second generation: %v", t.GatewayID, needErr)
		}
		if missing := document.MissingPolicies(needed, m.Policies); len(missing) > 0 {
			return httpx.Errorf(http.StatusConflict, "gateway %s lacks the policy %s that this API needs (its manifest lists %s): add it to the gateway, or change the API",
				t.GatewayID, strings.Join(missing, ", "), listOrNone(m.Policies))
		}
	}
	return nil
}

func listOrNone(ps []string) string {
	if len(ps) == 0 {
		return "none"
	}
	if len(ps) > 20 {
		return strings.Join(ps[:20], ", ") + ", …"
	}
	return strings.Join(ps, ", ")
}
