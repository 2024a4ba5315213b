package store

import "context"

// planChanged records that a plan was created, updated or deleted, for
// the second-generation gateways of its organization.
func (tx *Tx) planChanged(ctx context.Context, action string, p *Plan) error { return nil }

// subscriptionChanged records that a subscription was created, updated or
// deleted, for the gateways its API is deployed to.
func (tx *Tx) subscriptionChanged(ctx context.Context, action string, s *Subscription) error {
	return nil
}
