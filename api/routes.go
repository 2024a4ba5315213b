package api

import "net/http"

// routes is the whole HTTP surface, in the contract's order.
func (s *Server) routes() {
	m := s.mux
	m.Handle("GET /health", s.handle(s.health))

	m.Handle("POST /api/v1/organizations", s.user(s.createOrganization))
	m.Handle("GET /api/v1/organizations", s.user(s.getOrganization))

	m.Handle("POST /api/v1/projects", s.user(s.createProject))
	m.Handle("GET /api/v1/projects", s.user(s.listProjects))
	m.Handle("GET /api/v1/projects/{projectId}", s.user(s.getProject))
	m.Handle("PUT /api/v1/projects/{projectId}", s.user(s.updateProject))
	m.Handle("DELETE /api/v1/projects/{projectId}", s.user(s.deleteProject))

	m.Handle("POST /api/v1/apis", s.user(s.createAPI))
	m.Handle("GET /api/v1/apis", s.user(s.listAPIs))
	m.Handle("GET /api/v1/apis/{apiId}", s.user(s.getAPI))
	m.Handle("PUT /api/v1/apis/{apiId}", s.user(s.updateAPI))
	m.Handle("DELETE /api/v1/apis/{apiId}", s.user(s.deleteAPI))

	m.Handle("POST /api/v1/gateways", s.user(s.createGateway))
	m.Handle("GET /api/v1/gateways", s.user(s.listGateways))
	m.Handle("GET /api/v1/gateways/{gatewayId}", s.user(s.getGateway))
	m.Handle("PUT /api/v1/gateways/{gatewayId}", s.user(s.updateGateway))
	m.Handle("DELETE /api/v1/gateways/{gatewayId}", s.user(s.deleteGateway))

	m.Handle("POST /api/v1/gateways/{gatewayId}/tokens", s.user(s.issueToken))
	m.Handle("GET /api/v1/gateways/{gatewayId}/tokens", s.user(s.listTokens))
	m.Handle("DELETE /api/v1/gateways/{gatewayId}/tokens/{tokenId}", s.user(s.revokeToken))

	m.Handle("GET /api/v1/status/gateways", s.user(s.gatewayStatuses))
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}
