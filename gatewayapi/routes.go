package gatewayapi

import (
	"net/http"
)

// Register adds every route a gateway calls to m, in the contract's order.
func (s *Server) Register(m *http.ServeMux) {
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
	m.Handle("GET /api/internal/v1/apis/api-keys", s.gateway(s.apiKeys))
	m.Handle("GET /api/internal/v1/apis/{apiId}/subscriptions", s.gateway(s.apiSubscriptions))
	m.Handle("GET /api/internal/v1/subscription-plans", s.gateway(s.subscriptionPlans))
	m.Handle("GET /api/internal/v1/secrets", s.gateway(s.secrets))
	m.Handle("GET /api/internal/v1/secrets/{secretName}/value", s.gateway(s.secretValue))
}
