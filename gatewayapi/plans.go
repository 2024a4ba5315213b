package gatewayapi

// What a second-generation gateway pulls on every connect about the
// callers of its APIs (contract §7): the organization's subscription
// plans, the subscriptions of each API deployed to it, and the secrets
// those APIs refer to. Each answer is the complete truth (a gateway drops
// what is not in it), so every failure is an error status, never a short
// list.

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"platform-api/httpx"
	"platform-api/store"
)

// gatewayPlan is a plan as gateways pull it.
type gatewayPlan struct {
	ID                 string     `json:"id"`
	Handle             string     `json:"handle"`
	PlanName           string     `json:"planName"`
	StopOnQuotaReach   bool       `json:"stopOnQuotaReach"`
	ThrottleLimitCount *int       `json:"throttleLimitCount,omitempty"`
	ThrottleLimitUnit  string     `json:"throttleLimitUnit,omitempty"`
	ExpiryTime         *time.Time `json:"expiryTime,omitempty"`
	Status             string     `json:"status"`
	CreatedAt          time.Time  `json:"createdAt"`
	UpdatedAt          time.Time  `json:"updatedAt"`
	Etag               string     `json:"etag"`
}

// rowEtag names one state of a row: its id and the time it last changed.
func rowEtag(id string, updated time.Time) string {
	sum := sha256.Sum256([]byte(id + "\n" + updated.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(sum[:8])
}

// subscriptionPlans answers the organization's plans, a bare array.
func (s *Server) subscriptionPlans(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	plans, err := s.store.AllPlans(r.Context(), g.OrganizationID)
	if err != nil {
		return err
	}
	out := make([]gatewayPlan, len(plans))
	for i, p := range plans {
		out[i] = gatewayPlan{ID: p.ID, Handle: p.Name, PlanName: p.Name, StopOnQuotaReach: p.StopOnQuotaReach,
			ThrottleLimitCount: p.RequestCount, ThrottleLimitUnit: p.ThrottleLimitUnit(), ExpiryTime: p.ExpiresAt,
			Status: p.Status, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt, Etag: rowEtag(p.ID, p.UpdatedAt)}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// gatewaySubscription is a subscription as gateways pull it, token in
// plain (over TLS, to a gateway the API is deployed to).
type gatewaySubscription struct {
	ID                 string    `json:"id"`
	APIID              string    `json:"apiId"`
	ApplicationID      string    `json:"applicationId,omitempty"`
	SubscriptionToken  string    `json:"subscriptionToken"`
	SubscriptionPlanID string    `json:"subscriptionPlanId,omitempty"`
	Status             string    `json:"status"`
	CreatedAt          time.Time `json:"createdAt"`
	UpdatedAt          time.Time `json:"updatedAt"`
	Etag               string    `json:"etag"`
}

// apiSubscriptions answers the subscriptions of one API, a bare array: 404
// for an API the gateway's organization does not have, 403 for one not
// deployed to this gateway.
func (s *Server) apiSubscriptions(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	apiID := r.PathValue("apiId")
	if !httpx.IsID(apiID) {
		return httpx.Errorf(http.StatusNotFound, "API %s not found: %s", apiID, httpx.IDDescription)
	}
	subs, err := s.store.GatewaySubscriptions(r.Context(), g.GatewayID, g.OrganizationID, apiID)
	if err != nil {
		return err
	}
	out := make([]gatewaySubscription, len(subs))
	for i, sub := range subs {
		out[i] = gatewaySubscription{ID: sub.ID, APIID: sub.APIID, ApplicationID: sub.ApplicationID,
			SubscriptionToken: sub.Token, SubscriptionPlanID: sub.PlanID, Status: sub.Status,
			CreatedAt: sub.CreatedAt, UpdatedAt: sub.UpdatedAt, Etag: rowEtag(sub.ID, sub.UpdatedAt)}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// gatewaySecret is a secret as gateways pull it; Value only on request.
type gatewaySecret struct {
	UUID      string    `json:"uuid"`
	Handle    string    `json:"handle"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Provider  string    `json:"provider"`
	Status    string    `json:"status"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Value     *string   `json:"value,omitempty"`
}

type gatewaySecretList struct {
	List  []gatewaySecret `json:"list"`
	Count int             `json:"count"`
}

// secrets answers the secrets that APIs deployed to the gateway refer to;
// values with ?includeValues=true, only those changed since
// ?updatedAfter= when given.
func (s *Server) secrets(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	q := r.URL.Query()
	withValues := false
	if v := q.Get("includeValues"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return httpx.BadRequest("includeValues: must be true or false, not %q", v)
		}
		withValues = b
	}
	var after time.Time
	if v := q.Get("updatedAfter"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return httpx.BadRequest("updatedAfter: must be an RFC 3339 time, not %q", v)
		}
		after = t
	}
	list, err := s.store.GatewaySecrets(r.Context(), g.GatewayID, g.OrganizationID, withValues, after)
	if err != nil {
		return err
	}
	out := gatewaySecretList{List: make([]gatewaySecret, len(list)), Count: len(list)}
	for i, sec := range list {
		out.List[i] = gatewaySecret{UUID: sec.ID, Handle: sec.Name, Name: sec.Name, Type: "generic", Provider: "platform-api",
			Status: store.ConsumerActive, Hash: sec.Hash, CreatedAt: sec.CreatedAt, UpdatedAt: sec.UpdatedAt}
		if withValues {
			out.List[i].Value = &sec.Value
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// secretValue answers the value of one secret that an API deployed to the
// gateway refers to; any other is 404.
func (s *Server) secretValue(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	v, err := s.store.GatewaySecretValue(r.Context(), g.GatewayID, g.OrganizationID, r.PathValue("secretName"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, struct {
		Value string `json:"value"`
	}{v})
	return nil
}
