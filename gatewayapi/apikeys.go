package gatewayapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"platform-api/httpx"
	"platform-api/store"
)

// pulledKey is a key as a second-generation gateway pulls it (contract
// §7): apiKeyHashes is an object here (a string in events).
type pulledKey struct {
	UUID         string            `json:"uuid"`
	Name         string            `json:"name"`
	MaskedAPIKey string            `json:"maskedApiKey"`
	APIKeyHashes map[string]string `json:"apiKeyHashes"`
	ArtifactUUID string            `json:"artifactUuid"`
	Status       string            `json:"status"`
	CreatedAt    string            `json:"createdAt"`
	CreatedBy    string            `json:"createdBy"`
	UpdatedAt    string            `json:"updatedAt"`
	ExpiresAt    *string           `json:"expiresAt,omitempty"`
	Source       string            `json:"source"`
	Etag         string            `json:"etag"`
}

// apiKeys answers GET /apis/api-keys: every active key of every API
// deployed to the calling gateway, as a bare array (an empty one makes the
// gateway delete every key it holds: it is answered only as the truth).
// Once answered, the gateway's connections are sent the
// application.updated events it cannot pull (fleet.ConsumersPulled).
func (s *Server) apiKeys(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	keys, err := s.store.GatewayConsumerKeys(r.Context(), g.GatewayID)
	if err != nil {
		return err
	}
	out := make([]pulledKey, len(keys))
	for i, k := range keys {
		by := k.CreatedBy
		if by == "" {
			by = "platform-api"
		}
		tag := sha256.Sum256([]byte(k.ID + "\x00" + k.Hash + "\x00" + store.RFC3339(k.UpdatedAt)))
		out[i] = pulledKey{UUID: k.ID, Name: k.Name, MaskedAPIKey: k.MaskedAPIKey, APIKeyHashes: store.KeyHashes(k.Hash),
			ArtifactUUID: k.APIID, Status: store.KeyActive, CreatedAt: store.RFC3339(k.CreatedAt), CreatedBy: by,
			UpdatedAt: store.RFC3339(k.UpdatedAt), Source: "external", Etag: hex.EncodeToString(tag[:8])}
		if k.ExpiresAt != nil {
			e := store.RFC3339(*k.ExpiresAt)
			out[i].ExpiresAt = &e
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	// The gateway has the answer before anything it resolves against it.
	http.NewResponseController(w).Flush()
	if err := s.fleet.ConsumersPulled(context.WithoutCancel(r.Context()), g.GatewayID); err != nil {
		s.log.Warn("could not tell a gateway's connections that it pulled its keys; they catch up at its next connect",
			"gateway", g.GatewayID, "err", err)
	}
	return nil
}
