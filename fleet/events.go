package fleet

import (
	"time"

	"platform-api/hub"
	"platform-api/store"
)

// Event types and environment of the contract (§3, §6).
const (
	EventDeployed   = "api.deployed"
	EventUndeployed = "api.undeployed"
	EventDeleted    = "api.deleted"
	environment     = "production"
)

// The payloads carry deploymentId and performedAt to both generations: the
// first ignores fields it does not know (contract §6).

type deployedPayload struct {
	APIID        string `json:"apiId"`
	DeploymentID string `json:"deploymentId"`
	PerformedAt  string `json:"performedAt"`
	RevisionID   string `json:"revisionId"`
	Vhost        string `json:"vhost"`
	Environment  string `json:"environment"`
}

type undeployedPayload struct {
	APIID        string `json:"apiId"`
	DeploymentID string `json:"deploymentId"`
	PerformedAt  string `json:"performedAt"`
	Vhost        string `json:"vhost"`
	Environment  string `json:"environment"`
}

type deletedPayload struct {
	APIID string `json:"apiId"`
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// deployedEvent is api.deployed for d, told as performed at at.
func deployedEvent(d *store.Deployment, at time.Time) *hub.Event {
	return &hub.Event{Type: EventDeployed, APIID: d.APIID, Payload: deployedPayload{APIID: d.APIID,
		DeploymentID: d.DeploymentID, PerformedAt: rfc3339(at), RevisionID: d.RevisionID, Vhost: d.Vhost,
		Environment: environment}}
}

// undeployedEvent is api.undeployed for d, told as performed at at.
func undeployedEvent(d *store.Deployment, at time.Time) *hub.Event {
	return &hub.Event{Type: EventUndeployed, APIID: d.APIID, Payload: undeployedPayload{APIID: d.APIID,
		DeploymentID: d.DeploymentID, PerformedAt: rfc3339(at), Vhost: d.Vhost, Environment: environment}}
}

// deletedEvent is api.deleted for the second generation; the first gets
// api.undeployed when the API was deployed to it, else nothing.
func deletedEvent(apiID, deploymentID, vhost string, at time.Time, wasDeployed bool) *hub.Event {
	ev := &hub.Event{Type: EventDeleted, APIID: apiID, Payload: deletedPayload{APIID: apiID}, SkipGen1: !wasDeployed}
	if wasDeployed {
		ev.Gen1 = undeployedEvent(&store.Deployment{APIID: apiID, DeploymentID: deploymentID, Vhost: vhost}, at)
	}
	return ev
}
