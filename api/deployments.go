package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"platform-api/document"
	"platform-api/fleet"
	"platform-api/store"
)

type deployItem struct {
	GatewayID          string `json:"gatewayId"`
	Vhost              string `json:"vhost"`
	DisplayOnDevportal bool   `json:"displayOnDevportal"`
}

type deployItems []deployItem

// maxDeployItems bounds one deploy request (a whole fleet fits in one).
const maxDeployItems = 10_000

func (items deployItems) validate(ctx context.Context) error {
	var e fieldErrors
	if len(items) == 0 {
		return badRequest("request body must be a non-empty JSON array of {\"gatewayId\",\"vhost\",\"displayOnDevportal\"}")
	}
	if len(items) > maxDeployItems {
		return badRequest("at most %d gateways per deploy request", maxDeployItems)
	}
	seen := map[string]int{}
	for i, it := range items {
		p := fmt.Sprintf("[%d]", i)
		if !isID(it.GatewayID) {
			e.add(p+".gatewayId", "is required and must be a gateway UUID (%s)", idDescription)
		} else if j, dup := seen[it.GatewayID]; dup {
			e.add(p+".gatewayId", "gateway %s is already item [%d]", it.GatewayID, j)
		} else {
			seen[it.GatewayID] = i
		}
		if it.Vhost != "" && !validHostname(it.Vhost) {
			e.add(p+".vhost", "must be a host name such as api.example.com (or empty for the gateway's own)")
		}
	}
	return e.err()
}

// deployable refuses a revision gateways would drop (they need at least one
// upstream and one operation) or whose document would be larger than
// document.MaxBytes. The document it renders is kept for the downloads that
// follow the deployment.
func (s *Server) deployable(rev *store.Revision) error {
	if err := runnable(rev.API); err != nil {
		return err
	}
	entry, err := s.renderEntry(rev, document.Gen1, "")
	if err != nil {
		if document.IsTooLarge(err) {
			return badRequest("%v", document.ErrTooLarge)
		}
		return err
	}
	s.docs.Get(document.Key{Revision: rev.ID, Generation: document.Gen1}, func() (*document.Entry, error) { return entry, nil })
	return nil
}

func runnable(a *store.API) error {
	for _, b := range a.BackendServices {
		if len(b.Endpoints) > 0 {
			if len(a.Operations) == 0 {
				return badRequest("the API has no operation: gateways cannot run it; add operations and deploy again")
			}
			return nil
		}
	}
	return badRequest("the API has no backend service with an endpoint: gateways cannot run an API without an upstream; add backend-services and deploy again")
}

// deploy validates every item, then has the fleet record the deployments in
// one transaction and deliver api.deployed to the live connections.
func (s *Server) deploy(w http.ResponseWriter, r *http.Request, p Principal) error {
	var items deployItems
	if err := decode(w, r, s.maxBody, &items); err != nil {
		return err
	}
	targets := make([]store.DeployTarget, len(items))
	for i, it := range items {
		targets[i] = store.DeployTarget{GatewayID: it.GatewayID, Vhost: it.Vhost, DisplayOnDevportal: it.DisplayOnDevportal}
	}
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	out, err := s.fleet.Deploy(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.URL.Query().Get("revisionId"), targets, s.deployable, wait)
	if err != nil {
		return err
	}
	for _, res := range out {
		s.metrics.deployed(res.Status)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseWait reads ?wait=: a Go duration from 1ms to fleet.MaxWait.
func parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > fleet.MaxWait {
		return 0, badRequest("wait: must be a duration such as 10s, at most %s, not %q", fleet.MaxWait, v)
	}
	return d, nil
}

func (s *Server) undeploy(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := s.fleet.Undeploy(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.PathValue("gatewayId")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request, p Principal) error {
	page, err := parsePage(r)
	if err != nil {
		return err
	}
	list, err := s.store.Deployments(r.Context(), p.OrganizationID, r.PathValue("apiId"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pageOf(list, page))
	return nil
}

// pageOf cuts a page out of a whole list (for lists bounded by the number
// of gateways of one API, which are loaded whole).
func pageOf[T any](all []T, page store.Page) listBody[T] {
	start := min(page.Offset, len(all))
	end := min(start+page.Limit, len(all))
	return newList(all[start:end], len(all), page)
}

func (s *Server) listAPIGateways(w http.ResponseWriter, r *http.Request, p Principal) error {
	page, err := parsePage(r)
	if err != nil {
		return err
	}
	list, err := s.store.DeployedGateways(r.Context(), p.OrganizationID, r.PathValue("apiId"))
	if err != nil {
		return err
	}
	body := pageOf(list, page)
	if err := s.withPresence(r.Context(), body.List...); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

type proxyArtifact struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	DisplayName string    `json:"displayName"`
	Type        string    `json:"type"`
	SubType     string    `json:"subType"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// subTypes maps an API type to the contract's artifact sub-type.
var subTypes = map[string]string{
	"HTTP": "REST", "GRAPHQL": "GQL", "WS": "WEBSOCKET", "SOAP": "SOAP", "SOAPTOREST": "SOAP",
	"ASYNC": "ASYNC", "WEBSUB": "ASYNC", "SSE": "ASYNC", "WEBHOOK": "ASYNC",
}

func (s *Server) liveProxyArtifacts(w http.ResponseWriter, r *http.Request, p Principal) error {
	page, err := parsePage(r)
	if err != nil {
		return err
	}
	kind := r.URL.Query().Get("artifactType")
	switch kind {
	case "", "API", "MCP", "API_PRODUCT":
	default:
		return badRequest("artifactType: must be API, MCP or API_PRODUCT, not %q", kind)
	}
	apis, err := s.store.DeployedAPIs(r.Context(), p.OrganizationID, r.PathValue("gatewayId"))
	if err != nil {
		return err
	}
	out := []proxyArtifact{}
	if kind == "" || kind == "API" {
		for _, a := range apis {
			out = append(out, proxyArtifact{ID: a.ID, Name: a.Name, DisplayName: a.DisplayName, Type: "API",
				SubType: subTypes[a.Type], CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt})
		}
	}
	writeJSON(w, http.StatusOK, pageOf(out, page))
	return nil
}
