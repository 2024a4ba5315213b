package store

// The events of plans and subscriptions (contract §7), recorded in the
// transaction that changes them and delivered by the fleet
// (fleet/consumers.go): a plan's to every second-generation gateway of its
// organization, a subscription's to the gateways its API is deployed to,
// after that API's api.deployed. A subscription's plan must reach a gateway
// before the subscription: live, commit order sees to it (a subscription
// can only name a plan that was committed before); in the state sent after
// an api.deployed, each subscription's plan is sent first (SubscriptionState).

import (
	"context"
	"time"
)

// planPayload is subscriptionPlan.created / .updated.
type planPayload struct {
	PlanID             string     `json:"planId"`
	Handle             string     `json:"handle"`
	PlanName           string     `json:"planName"`
	BillingPlan        string     `json:"billingPlan"`
	StopOnQuotaReach   bool       `json:"stopOnQuotaReach"`
	ThrottleLimitCount *int       `json:"throttleLimitCount,omitempty"`
	ThrottleLimitUnit  string     `json:"throttleLimitUnit,omitempty"`
	ExpiryTime         *time.Time `json:"expiryTime,omitempty"`
	Status             string     `json:"status"`
}

// planDeletedPayload is subscriptionPlan.deleted.
type planDeletedPayload struct {
	PlanID   string `json:"planId"`
	Handle   string `json:"handle"`
	PlanName string `json:"planName"`
}

// subscriptionPayload is subscription.created / .updated / .deleted.
type subscriptionPayload struct {
	APIID              string `json:"apiId"`
	SubscriptionID     string `json:"subscriptionId"`
	ApplicationID      string `json:"applicationId,omitempty"`
	SubscriptionToken  string `json:"subscriptionToken"`
	SubscriptionPlanID string `json:"subscriptionPlanId,omitempty"`
	Status             string `json:"status"`
}

// planEvent is the event of a plan's change: action is created, updated
// or deleted. planName is the plan's unique name, never its display name
// (a gateway drops a plan whose name clashes).
func planEvent(action string, p *Plan) (*ConsumerEvent, error) {
	var payload any = planPayload{PlanID: p.ID, Handle: p.Name, PlanName: p.Name, BillingPlan: "free",
		StopOnQuotaReach: p.StopOnQuotaReach, ThrottleLimitCount: p.RequestCount, ThrottleLimitUnit: p.ThrottleLimitUnit(),
		ExpiryTime: p.ExpiresAt, Status: p.Status}
	if action == "deleted" {
		payload = planDeletedPayload{PlanID: p.ID, Handle: p.Name, PlanName: p.Name}
	}
	return NewConsumerEvent("subscriptionPlan."+action, p.OrganizationID, "", "", payload)
}

// subscriptionEvent is the event of a subscription's change, its token
// (s.Token) in plain.
func subscriptionEvent(action string, s *Subscription) (*ConsumerEvent, error) {
	return NewConsumerEvent("subscription."+action, s.OrganizationID, s.APIID, "", subscriptionPayload{
		APIID: s.APIID, SubscriptionID: s.ID, ApplicationID: s.ApplicationID, SubscriptionToken: s.Token,
		SubscriptionPlanID: s.PlanID, Status: s.Status})
}

// planChanged records that a plan was created, updated or deleted, for
// the second-generation gateways of its organization.
func (tx *Tx) planChanged(ctx context.Context, now time.Time, action string, p *Plan) error {
	ev, err := planEvent(action, p)
	if err != nil {
		return err
	}
	return tx.recordConsumer(ctx, now, ev)
}

// subscriptionChanged records that a subscription was created, updated or
// deleted, for the gateways its API is deployed to. s.Token must be the
// plain token.
func (tx *Tx) subscriptionChanged(ctx context.Context, now time.Time, action string, s *Subscription) error {
	ev, err := subscriptionEvent(action, s)
	if err != nil {
		return err
	}
	return tx.recordConsumer(ctx, now, ev)
}

// SubscriptionState is the fleet's source of subscriptions
// (fleet.ConsumerSource): what follows an API's api.deployed onto a
// second-generation connection.
type SubscriptionState struct{ DB *DB }

// APIState returns, for each plan the API's subscriptions are under, its
// subscriptionPlan.created (the gateway may not have pulled it yet), then
// a subscription.created for each subscription of the API.
func (s SubscriptionState) APIState(ctx context.Context, orgID, apiID string) ([]*ConsumerEvent, error) {
	var evs []*ConsumerEvent
	err := s.DB.readTx(ctx, func(tx *Tx) error {
		evs = nil
		subs, err := apiSubscriptions(ctx, tx, apiID)
		if err != nil || len(subs) == 0 {
			return err
		}
		plans, err := collect(scanPlan)(tx.QueryContext(ctx, `SELECT `+planColumns+` FROM subscription_plans
			WHERE id IN (SELECT plan_id FROM subscriptions WHERE api_id = $1) AND organization_id = $2
			ORDER BY created_at, id`, apiID, orgID))
		if err != nil {
			return err
		}
		for _, p := range plans {
			ev, err := planEvent("created", p)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		for _, sub := range subs {
			ev, err := subscriptionEvent("created", sub)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		return nil
	})
	return evs, err
}

// AfterKeysPulled returns nothing: gateways pull plans and subscriptions.
func (SubscriptionState) AfterKeysPulled(ctx context.Context, orgID, gatewayID string) ([]*ConsumerEvent, error) {
	return nil, nil
}
