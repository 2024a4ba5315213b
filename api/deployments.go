package api

import (
	"context"
	"fmt"
	"net/http"
	"platform-api/apidef"
	"platform-api/httpx"
	"time"

	"platform-api/auth"
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

func (items deployItems) Validate(ctx context.Context) error {
	var e httpx.FieldErrors
	if len(items) == 0 {
		return httpx.BadRequest("request body must be a non-empty JSON array of {\"gatewayId\",\"vhost\",\"displayOnDevportal\"}")
	}
	if len(items) > maxDeployItems {
		return httpx.BadRequest("at most %d gateways per deploy request", maxDeployItems)
	}
	seen := map[string]int{}
	for i, it := range items {
		p := fmt.Sprintf("[%d]", i)
		if !httpx.IsID(it.GatewayID) {
			e.Add(p+".gatewayId", "is required and must be a gateway UUID (%s)", httpx.IDDescription)
		} else if j, dup := seen[it.GatewayID]; dup {
			e.Add(p+".gatewayId", "gateway %s is already item [%d]", it.GatewayID, j)
		} else {
			seen[it.GatewayID] = i
		}
		if it.Vhost != "" && !validHostname(it.Vhost) {
			e.Add(p+".vhost", "must be a host name such as api.example.com (or empty for the gateway's own)")
		}
	}
	return e.Err()
}

// deployable refuses a revision gateways would drop (they need at least one
// upstream and one operation) or whose document would be larger than
// document.MaxBytes. The document it renders is kept for the downloads that
// follow the deployment.
func (s *Server) deployable(rev *store.Revision) error {
	if err := apidef.Runnable(rev.API); err != nil {
		return err
	}
	entry, err := s.docs.Render(rev, document.Gen1, "")
	if err != nil {
		if document.IsTooLarge(err) {
			return httpx.BadRequest("%v", document.ErrTooLarge)
		}
		return err
	}
	s.docs.Keep(rev, document.Gen1, "", entry)
	return nil
}

// deploy validates every item, then has the fleet record the deployments in
// one transaction and deliver api.deployed to the live connections.
func (s *Server) deploy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var items deployItems
	if err := httpx.Decode(w, r, s.maxBody, &items); err != nil {
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
	if wait > 0 {
		// The server gives every answer a minute to be written (main's
		// WriteTimeout, counted from the request's headers); a wait of up
		// to fleet.MaxWait must not use it up, or the answer is cut. Not
		// every writer has a deadline (a recorder in a test): nothing to
		// extend then.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + answerWriteTime))
	}
	apiID := r.PathValue("apiId")
	check := func(rev *store.Revision) error { // refused while a rollout of the API runs (rollouts.go)
		if err := s.noRollout(r.Context(), apiID); err != nil {
			return err
		}
		if err := s.deployable(rev); err != nil {
			return err
		}
		return s.policiesPresent(r.Context(), rev.API, targets)
	}
	out, err := s.fleet.Deploy(r.Context(), p.OrganizationID, apiID, r.URL.Query().Get("revisionId"), targets, check, wait)
	if err != nil {
		return err
	}
	for _, res := range out {
		s.metrics.Deployed(res.Status)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// answerWriteTime is what a deploy answer that waited has, beyond its
// wait, to record the deployment and write the answer: the minute main's
// http.Server gives every answer.
const answerWriteTime = 60 * time.Second

// parseWait reads ?wait=: a Go duration from 1ms to fleet.MaxWait.
func parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > fleet.MaxWait {
		return 0, httpx.BadRequest("wait: must be a duration such as 10s, at most %s, not %q", fleet.MaxWait, v)
	}
	return d, nil
}

func (s *Server) undeploy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.fleet.Undeploy(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.PathValue("gatewayId")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, err := s.store.Deployments(r.Context(), p.OrganizationID, r.PathValue("apiId"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.PageOf(list, page))
	return nil
}

// listRevisions lists the kept revisions of an API, newest first, each with
// the gateways that run it: what a rollback (deploy-revision?revisionId=)
// chooses from.
func (s *Server) listRevisions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Revisions(r.Context(), p.OrganizationID, r.PathValue("apiId"), store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) listAPIGateways(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, err := s.store.DeployedGateways(r.Context(), p.OrganizationID, r.PathValue("apiId"))
	if err != nil {
		return err
	}
	body := httpx.PageOf(list, page)
	if err := s.withPresence(r.Context(), body.List...); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, body)
	return nil
}

// ProxyArtifact is one item of a gateway's live proxy artifacts.
type ProxyArtifact struct {
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

func (s *Server) liveProxyArtifacts(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	kind := r.URL.Query().Get("artifactType")
	switch kind {
	case "", "API", "MCP", "API_PRODUCT":
	default:
		return httpx.BadRequest("artifactType: must be API, MCP or API_PRODUCT, not %q", kind)
	}
	apis, err := s.store.DeployedAPIs(r.Context(), p.OrganizationID, r.PathValue("gatewayId"))
	if err != nil {
		return err
	}
	out := []ProxyArtifact{}
	if kind == "" || kind == "API" {
		for _, a := range apis {
			out = append(out, ProxyArtifact{ID: a.ID, Name: a.Name, DisplayName: a.DisplayName, Type: "API",
				SubType: subTypes[a.Type], CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt})
		}
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.PageOf(out, page))
	return nil
}
