package api

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"
)

// routes is the whole HTTP surface, in the contract's order.
func (s *Server) routes() {
	m := s.mux
	m.Handle("GET /health", s.handle(s.health))
	m.Handle("GET /ready", s.handle(s.ready))
	m.Handle("GET /metrics", s.operator(s.handle(s.serveMetrics)))
	// Profiles of the running server (go tool pprof), for the operator.
	m.Handle("GET /debug/pprof/", s.operator(http.HandlerFunc(pprof.Index)))
	m.Handle("GET /debug/pprof/profile", s.operator(http.HandlerFunc(pprof.Profile)))
	m.Handle("GET /debug/pprof/trace", s.operator(http.HandlerFunc(pprof.Trace)))
	m.Handle("GET /debug/pprof/symbol", s.operator(http.HandlerFunc(pprof.Symbol)))

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

	m.Handle("POST /api/v1/apis/{apiId}/deploy-revision", s.user(s.deploy))
	m.Handle("DELETE /api/v1/apis/{apiId}/deployments/{gatewayId}", s.user(s.undeploy))
	m.Handle("GET /api/v1/apis/{apiId}/deployments", s.user(s.listDeployments))
	m.Handle("GET /api/v1/apis/{apiId}/gateways", s.user(s.listAPIGateways))

	m.Handle("POST /api/v1/gateways", s.user(s.createGateway))
	m.Handle("GET /api/v1/gateways", s.user(s.listGateways))
	m.Handle("GET /api/v1/gateways/{gatewayId}", s.user(s.getGateway))
	m.Handle("PUT /api/v1/gateways/{gatewayId}", s.user(s.updateGateway))
	m.Handle("DELETE /api/v1/gateways/{gatewayId}", s.user(s.deleteGateway))

	m.Handle("POST /api/v1/gateways/{gatewayId}/tokens", s.user(s.issueToken))
	m.Handle("GET /api/v1/gateways/{gatewayId}/tokens", s.user(s.listTokens))
	m.Handle("DELETE /api/v1/gateways/{gatewayId}/tokens/{tokenId}", s.user(s.revokeToken))

	m.Handle("GET /api/v1/gateways/{gatewayId}/live-proxy-artifacts", s.user(s.liveProxyArtifacts))
	m.Handle("GET /api/v1/status/gateways", s.user(s.gatewayStatuses))

	m.Handle("GET /api/internal/v1/ws/gateways/connect", s.handle(s.connectGateway))
	m.Handle("GET /api/internal/v1/apis", s.gateway(s.gatewayAPIs))
	m.Handle("GET /api/internal/v1/apis/{apiId}", s.gateway(s.gatewayAPI))
	m.Handle("POST /api/internal/v1/apis/{apiId}/gateway-deployments", s.gateway(s.reportGatewayDeployment))

	// Second-generation gateways (§6).
	m.Handle("POST /api/internal/v1/gateways/{gatewayId}/manifest", s.gateway(s.postManifest))
	m.Handle("GET /api/internal/v1/deployments", s.gateway(s.syncDeployments))
	m.Handle("POST /api/internal/v1/deployments/fetch-batch", s.gateway(s.fetchBatch))
	m.Handle("POST /api/internal/v1/artifacts/exists", s.gateway(s.artifactsExist))
	m.Handle("POST /api/internal/v1/artifacts/import-gateway-artifacts", s.gateway(s.importArtifacts))
	m.Handle("GET /api/internal/v1/apis/api-keys", s.gateway(notSupported("API keys")))
	m.Handle("GET /api/internal/v1/apis/{apiId}/subscriptions", s.gateway(notSupported("Subscriptions")))
	m.Handle("GET /api/internal/v1/subscription-plans", s.gateway(notSupported("Subscription plans")))
	m.Handle("GET /api/internal/v1/secrets", s.gateway(notSupported("Secrets")))
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// ready tells a load balancer whether to send traffic: unlike /health it
// asks the database, and it fails as soon as shutdown begins.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) error {
	if s.shuttingDown.Load() {
		return errorf(http.StatusServiceUnavailable, "the server is shutting down")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("readiness check: database does not answer", "err", err)
		return errorf(http.StatusServiceUnavailable, "the database does not answer")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}
