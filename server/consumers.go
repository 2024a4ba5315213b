package server

import (
	"platform-api/fleet"
	"platform-api/store"
)

// consumerSources are the features whose state follows APIs onto
// second-generation gateways (fleet/consumers.go), in the order a
// connection is sent it: keys before the applications that map them,
// plans before subscriptions.
func consumerSources(db *store.DB) []fleet.ConsumerSource {
	return []fleet.ConsumerSource{store.ConsumerKeySource{DB: db}, store.SubscriptionState{DB: db}}
}
