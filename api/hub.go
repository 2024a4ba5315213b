package api

import "time"

// Hub is what the HTTP layer needs from the live gateway connections. The
// hub package implements it; a nil Hub means no gateway is ever connected.
type Hub interface {
	// Presence reports how many connections a gateway has now and when one
	// of them last showed activity.
	Presence(gatewayID string) (connections int, lastSeen time.Time)
	// CloseToken closes every connection that authenticated with the token.
	CloseToken(tokenID string)
	// CloseGateway closes every connection of the gateway.
	CloseGateway(gatewayID string)
}

type noHub struct{}

func (noHub) Presence(string) (int, time.Time) { return 0, time.Time{} }
func (noHub) CloseToken(string)                {}
func (noHub) CloseGateway(string)              {}
