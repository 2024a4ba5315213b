package api

import (
	"net/http"

	"platform-api/store"
)

// Mux is what routes are registered on: an *http.ServeMux, or a recorder
// (Routes).
type Mux interface {
	Handle(pattern string, handler http.Handler)
}

// Register adds every route of the public API to m, in the contract's
// order. Each is described in api/openapi.yaml (TestDescriptionComplete).
func (s *Server) Register(m Mux) {
	m.Handle("GET /api/v1/openapi.yaml", http.HandlerFunc(serveDescriptionYAML))
	m.Handle("GET /api/v1/openapi.json", http.HandlerFunc(serveDescriptionJSON))

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

	m.Handle("POST /api/v1/apis/import-openapi", s.user(s.importOpenAPI))
	m.Handle("POST /api/v1/apis/validate-openapi", s.user(s.validateOpenAPI))
	m.Handle("GET /api/v1/apis/{apiId}/openapi", s.user(s.getOpenAPI))
	m.Handle("PUT /api/v1/apis/{apiId}/openapi", s.user(s.updateOpenAPI))

	m.Handle("POST /api/v1/apis/{apiId}/deploy-revision", s.user(s.deploy))
	m.Handle("DELETE /api/v1/apis/{apiId}/deployments/{gatewayId}", s.user(s.undeploy))
	m.Handle("GET /api/v1/apis/{apiId}/deployments", s.user(s.listDeployments))
	m.Handle("GET /api/v1/apis/{apiId}/gateways", s.user(s.listAPIGateways))
	m.Handle("GET /api/v1/apis/{apiId}/revisions", s.user(s.listRevisions))

	m.Handle("POST /api/v1/apis/{apiId}/api-keys", s.user(s.createKey))
	m.Handle("GET /api/v1/apis/{apiId}/api-keys", s.user(s.listKeys))
	m.Handle("GET /api/v1/apis/{apiId}/api-keys/{keyName}", s.user(s.getKey))
	m.Handle("POST /api/v1/apis/{apiId}/api-keys/{keyName}/regenerate", s.user(s.regenerateKey))
	m.Handle("PUT /api/v1/apis/{apiId}/api-keys/{keyName}", s.user(s.updateKey))
	m.Handle("DELETE /api/v1/apis/{apiId}/api-keys/{keyName}", s.user(s.deleteKey))
	m.Handle("POST /api/v1/applications", s.user(s.createApplication))
	m.Handle("GET /api/v1/applications", s.user(s.listApplications))
	m.Handle("GET /api/v1/applications/{applicationId}", s.user(s.getApplication))
	m.Handle("PUT /api/v1/applications/{applicationId}", s.user(s.updateApplication))
	m.Handle("DELETE /api/v1/applications/{applicationId}", s.user(s.deleteApplication))
	m.Handle("POST /api/v1/apis/{apiId}/rollouts", s.user(s.createRollout))
	m.Handle("GET /api/v1/apis/{apiId}/rollouts", s.user(s.listRollouts))
	m.Handle("GET /api/v1/rollouts/{rolloutId}", s.user(s.getRollout))
	m.Handle("POST /api/v1/rollouts/{rolloutId}/pause", s.user(s.controlRollout(store.ActionPause)))
	m.Handle("POST /api/v1/rollouts/{rolloutId}/resume", s.user(s.controlRollout(store.ActionResume)))
	m.Handle("POST /api/v1/rollouts/{rolloutId}/abort", s.user(s.controlRollout(store.ActionAbort)))
	m.Handle("POST /api/v1/rollouts/{rolloutId}/rollback", s.user(s.rollbackRollout))

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

	// API consumers (§7).
	m.Handle("POST /api/v1/subscription-plans", s.user(s.createPlan))
	m.Handle("GET /api/v1/subscription-plans", s.user(s.listPlans))
	m.Handle("GET /api/v1/subscription-plans/{planId}", s.user(s.getPlan))
	m.Handle("PUT /api/v1/subscription-plans/{planId}", s.user(s.updatePlan))
	m.Handle("DELETE /api/v1/subscription-plans/{planId}", s.user(s.deletePlan))
	m.Handle("POST /api/v1/subscriptions", s.user(s.createSubscription))
	m.Handle("GET /api/v1/subscriptions", s.user(s.listSubscriptions))
	m.Handle("GET /api/v1/subscriptions/{subscriptionId}", s.user(s.getSubscription))
	m.Handle("PUT /api/v1/subscriptions/{subscriptionId}", s.user(s.updateSubscription))
	m.Handle("DELETE /api/v1/subscriptions/{subscriptionId}", s.user(s.deleteSubscription))
	m.Handle("POST /api/v1/subscriptions/{subscriptionId}/regenerate-token", s.user(s.regenerateSubscriptionToken))
	m.Handle("POST /api/v1/secrets", s.user(s.createSecret))
	m.Handle("GET /api/v1/secrets", s.user(s.listSecrets))
	m.Handle("GET /api/v1/secrets/{secretName}", s.user(s.getSecret))
	m.Handle("PUT /api/v1/secrets/{secretName}", s.user(s.updateSecret))
	m.Handle("DELETE /api/v1/secrets/{secretName}", s.user(s.deleteSecret))
}
