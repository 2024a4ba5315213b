package api

import (
	"archive/zip"
	"bytes"
	"fmt"
	"net/http"

	"github.com/google/uuid"

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

func (s *Server) verifyGateway(r *http.Request) (*store.GatewayIdentity, error) {
	key := r.Header.Get("api-key")
	if key == "" {
		return nil, errorf(http.StatusUnauthorized, "missing api-key header: send the gateway token as api-key: <token>")
	}
	g, err := s.store.VerifyToken(r.Context(), key)
	if err != nil {
		if !s.limiter.allow(s.clientAddr(r)) {
			return nil, errorf(http.StatusTooManyRequests, "too many failed attempts from this address; wait a minute")
		}
		return nil, err
	}
	return g, nil
}

// connectGateway is the gateway channel: attempt limit, api-key, then the
// WebSocket upgrade. Every refusal before the upgrade is a JSON error.
func (s *Server) connectGateway(w http.ResponseWriter, r *http.Request) error {
	if !s.limiter.allow(s.clientAddr(r)) {
		s.metrics.rateLimited.Add(1)
		return errorf(http.StatusTooManyRequests, "too many connection attempts from this address; retry later with backoff")
	}
	g, err := s.verifyGateway(r)
	if err != nil {
		s.metrics.handshakeRefused(err)
		return err
	}
	if ok, why := hub.CanUpgrade(w, r); !ok {
		s.metrics.notWebSocket.Add(1)
		return badRequest("%s", why)
	}
	// The hub counts the rest: registered (ok) or refused for a limit.
	s.hub.Accept(w, r, hub.Identity{GatewayID: g.GatewayID, OrganizationID: g.OrganizationID, TokenID: g.TokenID})
	return nil
}

// zipDocuments writes the YAML documents of the deployments as a zip.
func zipDocuments(w http.ResponseWriter, filename string, deps []*store.GatewayDeployment) error {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, d := range deps {
		doc, err := RenderDocument(d.Revision.API)
		if err != nil {
			return fmt.Errorf("render API %s: %w", d.APIID, err)
		}
		f, err := zw.CreateHeader(&zip.FileHeader{Name: "api-" + d.APIID + ".yaml", Method: zip.Deflate, Modified: d.Revision.CreatedAt})
		if err != nil {
			return err
		}
		if _, err := f.Write(doc); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, filename))
	w.Write(buf.Bytes())
	return nil
}

// gatewayAPI returns the revision of one API deployed to the calling gateway.
func (s *Server) gatewayAPI(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	apiID := r.PathValue("apiId")
	deps, err := s.store.GatewayState(r.Context(), g.GatewayID, apiID)
	if err != nil {
		return err
	}
	if err := s.store.MarkFetched(r.Context(), g.GatewayID, []string{apiID}); err != nil {
		s.log.Warn("could not record fetch", "gateway", g.GatewayID, "err", err)
	}
	return zipDocuments(w, "api-"+apiID+".zip", deps)
}

// gatewayAPIs returns every API deployed to the calling gateway.
func (s *Server) gatewayAPIs(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	deps, err := s.store.GatewayState(r.Context(), g.GatewayID, "")
	if err != nil {
		return err
	}
	ids := make([]string, len(deps))
	for i, d := range deps {
		ids[i] = d.APIID
	}
	if err := s.store.MarkFetched(r.Context(), g.GatewayID, ids); err != nil {
		s.log.Warn("could not record fetch", "gateway", g.GatewayID, "err", err)
	}
	return zipDocuments(w, "apis-org-"+g.OrganizationID+".zip", deps)
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
	if _, err := uuid.Parse(apiID); err != nil || len(apiID) != 36 {
		return badRequest("apiId: must be an API UUID")
	}
	var rep gatewayDeploymentReport
	if err := decode(w, r, s.maxBody, &rep); err != nil {
		return err
	}
	if rep.ID != "" && rep.ID != apiID {
		return badRequest("id: must equal the apiId of the path")
	}
	if rep.ProjectIdentifier == "" {
		return badRequest("projectIdentifier: is required (the name of the project to hold the API)")
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
	applyAPIDefaults(a)
	if err := validateAPI(a); err != nil {
		return badRequest("configuration.data: %v", err)
	}
	created, err := s.store.RecordGatewayDeployment(r.Context(), g.GatewayID, a, rep.ProjectIdentifier)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]string{"message": "API deployment registered successfully"})
	return nil
}
