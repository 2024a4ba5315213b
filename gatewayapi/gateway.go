package gatewayapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"platform-api/apidef"
	"platform-api/document"
	"platform-api/httpx"
	"platform-api/hub"
	"platform-api/store"
)

// gatewayHandler is a gateway-facing handler, called with the verified
// gateway token's identity.
type gatewayHandler func(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error

// gateway wraps a gateway-facing handler with api-key verification. Failed
// verifications count against the client address's attempt budget, so a
// client guessing keys is soon answered 429 without touching the database.
func (s *Server) gateway(h gatewayHandler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		g, err := s.verifyGateway(r)
		if err != nil {
			return err
		}
		return h(w, r, g)
	})
}

// handle adapts h (httpx.Handle); a lost database is a 503 whichever path
// its error took, so that gateways back off and retry.
func (s *Server) handle(h httpx.HandlerFunc) http.Handler {
	return httpx.Handle(s.log, func(w http.ResponseWriter, r *http.Request) error {
		return s.store.Classify(r.Context(), h(w, r))
	})
}

func (s *Server) verifyGateway(r *http.Request) (*store.GatewayIdentity, error) {
	key := r.Header.Get("api-key")
	if key == "" {
		return nil, httpx.Errorf(http.StatusUnauthorized, "missing api-key header: send the gateway token as api-key: <token>")
	}
	addr := httpx.ClientAddr(r, s.trustXFF)
	if s.limiter.Exhausted(addr) {
		return nil, httpx.Errorf(http.StatusTooManyRequests, "too many failed attempts from this address; wait a minute")
	}
	g, err := s.store.VerifyToken(r.Context(), key)
	if err != nil {
		// Only a bad token spends the address's budget: a fleet behind one
		// address must not be locked out by a database outage.
		if errors.Is(err, store.ErrBadToken) && !s.limiter.Allow(addr) {
			return nil, httpx.Errorf(http.StatusTooManyRequests, "too many failed attempts from this address; wait a minute")
		}
		return nil, err
	}
	return g, nil
}

// connectGateway is the gateway channel: attempt limit, api-key, then the
// WebSocket upgrade. Every refusal before the upgrade is a JSON error.
func (s *Server) connectGateway(w http.ResponseWriter, r *http.Request) error {
	if !s.limiter.Allow(httpx.ClientAddr(r, s.trustXFF)) {
		s.metrics.RateLimited.Add(1)
		return httpx.Errorf(http.StatusTooManyRequests, "too many connection attempts from this address; retry later with backoff")
	}
	g, err := s.verifyGateway(r)
	if err != nil {
		s.handshakeRefused(err)
		return err
	}
	if ok, why := hub.CanUpgrade(w, r); !ok {
		s.metrics.NotWebSocket.Add(1)
		return httpx.BadRequest("%s", why)
	}
	// The hub counts the rest: registered (ok) or refused for a limit, the
	// gateway's connections on other replicas included.
	elsewhere, err := s.fleet.Elsewhere(r.Context(), g.GatewayID)
	if err != nil {
		return err
	}
	id := hub.Identity{GatewayID: g.GatewayID, OrganizationID: g.OrganizationID, TokenID: g.TokenID, Elsewhere: elsewhere}
	if err := s.hub.Accept(w, r, id); err != nil {
		return fmt.Errorf("take over the gateway connection: %w", err)
	}
	return nil
}

// gatewayAPI returns the revision of one API deployed to the calling
// gateway, in the form of its generation, rendered once for the fleet. It
// is one document, copied from the cache as it goes out, and not bounded
// like the answers of many: a fleet downloads a new revision all at once.
func (s *Server) gatewayAPI(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	apiID := r.PathValue("apiId")
	if !httpx.IsID(apiID) {
		return httpx.Errorf(http.StatusNotFound, "API %s not found: %s", apiID, httpx.IDDescription)
	}
	d, gen2, err := s.fleet.DeployedRevision(r.Context(), g.GatewayID, apiID)
	if err != nil {
		return err
	}
	entry, err := s.docs.Get(r.Context(), apiID, d.RevisionID, document.GenerationOf(gen2), d.Vhost)
	if err != nil {
		return err
	}
	body, err := entry.Zip("api-" + apiID + ".yaml")
	if err != nil {
		return err
	}
	s.fleet.Downloaded(g.GatewayID, map[string]string{apiID: d.RevisionID})
	h := w.Header()
	for k, v := range attachment("application/zip", "api-"+apiID+".zip") {
		h.Set(k, v)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body) // a client gone by now sees a short answer
	return nil
}

// gatewayAPIs returns every API deployed to the calling gateway, from the
// same rendered documents. The zip is written as each document comes, so
// the answer holds one document at a time whatever their number, and the
// answers of this kind running at once are bounded.
func (s *Server) gatewayAPIs(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	release, err := s.answers.acquire(w, g.GatewayID)
	if err != nil {
		return err
	}
	defer release()
	deps, err := s.store.GatewayDeployments(r.Context(), g.GatewayID)
	if err != nil {
		return err
	}
	m, err := s.store.Manifest(r.Context(), g.GatewayID)
	if err != nil {
		return err
	}
	out := newStreamedAnswer(w, attachment("application/zip", "apis-org-"+g.OrganizationID+".zip"))
	z := document.NewZipWriter(out)
	ids := make(map[string]string, len(deps))
	for _, d := range deps {
		entry, err := s.docs.Get(r.Context(), d.APIID, d.RevisionID, document.GenerationOf(m != nil), d.Vhost)
		if err != nil {
			return out.fail(r, s.log, err)
		}
		if err := z.Add("api-"+d.APIID+".yaml", entry); err != nil {
			return out.fail(r, s.log, err)
		}
		ids[d.APIID] = d.RevisionID
	}
	if err := z.Close(); err != nil {
		return out.fail(r, s.log, err)
	}
	s.fleet.Downloaded(g.GatewayID, ids)
	return nil
}

// gatewayDeploymentReport is what a gateway sends about an API it deployed
// by itself (contract §4).
type gatewayDeploymentReport struct {
	ID            string `json:"id"`
	Configuration struct {
		Version string `json:"version"`
		Kind    string `json:"kind"`
		Data    struct {
			Name     string `json:"name"`
			Version  string `json:"version"`
			Context  string `json:"context"`
			Upstream []struct {
				URL string `json:"url"`
			} `json:"upstream"`
			Operations []struct {
				Method string `json:"method"`
				Path   string `json:"path"`
			} `json:"operations"`
		} `json:"data"`
	} `json:"configuration"`
	Status            string `json:"status"`
	CreatedAt         any    `json:"createdAt"`
	UpdatedAt         any    `json:"updatedAt"`
	DeployedAt        any    `json:"deployedAt"`
	DeployedVersion   any    `json:"deployedVersion"`
	ProjectIdentifier string `json:"projectIdentifier"`
}

// reportGatewayDeployment registers an API a gateway deployed by itself: the
// API (one backend service per upstream) and the deployment in one
// transaction. A repeat is answered 200.
func (s *Server) reportGatewayDeployment(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	apiID := r.PathValue("apiId")
	if !httpx.IsID(apiID) {
		return httpx.BadRequest("apiId: must be an API UUID (%s)", httpx.IDDescription)
	}
	var rep gatewayDeploymentReport
	if err := httpx.DecodeFromGateway(w, r, s.maxBody, &rep); err != nil {
		return err
	}
	if rep.ID != "" && rep.ID != apiID {
		return httpx.BadRequest("id: must equal the apiId of the path")
	}
	if rep.ProjectIdentifier == "" {
		return httpx.BadRequest("projectIdentifier: is required (the name of the project to hold the API)")
	}
	data := rep.Configuration.Data
	a := &store.API{ID: apiID, OrganizationID: g.OrganizationID, Name: data.Name, Version: data.Version,
		Context: data.Context, ProjectID: uuid.Nil.String()}
	for i, u := range data.Upstream {
		a.BackendServices = append(a.BackendServices, store.BackendService{
			Name: fmt.Sprintf("upstream-%d", i+1), Endpoints: []store.Endpoint{{URL: u.URL}}})
	}
	for _, op := range data.Operations {
		a.Operations = append(a.Operations, store.Operation{Request: &store.OperationRequest{Method: op.Method, Path: op.Path}})
	}
	apidef.ApplyDefaults(a)
	if err := apidef.Validate(r.Context(), a); err != nil {
		return httpx.BadRequest("configuration.data: %v", err)
	}
	created, err := s.store.RecordGatewayDeployment(r.Context(), g.GatewayID, a, rep.ProjectIdentifier)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	httpx.WriteJSON(w, status, map[string]string{"message": "API deployment registered successfully"})
	return nil
}

// handshakeRefused counts a gateway handshake refused by verifyGateway.
// Other failures (a database error, a 500) are not a handshake result.
func (s *Server) handshakeRefused(err error) {
	switch status, _ := httpx.ErrorStatus(err); status {
	case http.StatusUnauthorized:
		s.metrics.BadKey.Add(1)
	case http.StatusTooManyRequests:
		s.metrics.RateLimited.Add(1)
	}
}
