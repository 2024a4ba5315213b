package api

import (
	"context"
	"net/http"
	"platform-api/httpx"
	"regexp"
	"slices"
	"strings"
	"time"

	"platform-api/auth"
	"platform-api/store"
)

type gatewayRequest struct {
	Name              *string `json:"name"`
	DisplayName       *string `json:"displayName"`
	Description       *string `json:"description"`
	Vhost             *string `json:"vhost"`
	IsCritical        *bool   `json:"isCritical"`
	FunctionalityType *string `json:"functionalityType"`
}

var (
	gatewayNamePattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)
	hostLabelPattern   = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$`)
)

var functionalityTypes = []string{"regular", "ai", "event"}

// validHostname reports whether s is a DNS host name: dot-separated labels of
// 1 to 63 letters, digits and inner hyphens, at most 253 characters in all.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if len(label) > 63 || !hostLabelPattern.MatchString(label) {
			return false
		}
	}
	return true
}

// validate checks a registration (creating) or an update.
func (g *gatewayRequest) validate(creating bool) error {
	var errs httpx.FieldErrors
	if creating {
		name := deref(g.Name)
		switch {
		case name == "":
			errs.Add("name", "is required")
		case len(name) < 3 || len(name) > 64 || !gatewayNamePattern.MatchString(name):
			errs.Add("name", "must be 3 to 64 characters of a-z, 0-9 and '-', not starting or ending with '-'")
		}
		if g.FunctionalityType != nil && !slices.Contains(functionalityTypes, *g.FunctionalityType) {
			errs.Add("functionalityType", "must be one of regular, ai, event")
		}
	}
	if creating || g.DisplayName != nil {
		httpx.CheckText(&errs, "displayName", deref(g.DisplayName), true, 128)
	}
	if g.Description != nil {
		httpx.CheckText(&errs, "description", *g.Description, false, 1024)
	}
	if creating || g.Vhost != nil {
		if v := deref(g.Vhost); !validHostname(v) {
			errs.Add("vhost", "must be a host name such as gw.example.com")
		}
	}
	return errs.Err()
}

// withPresence fills IsActive from the live connections on every replica,
// never from a stored flag.
func (s *Server) withPresence(ctx context.Context, gws ...*store.Gateway) error {
	ids := make([]string, len(gws))
	for i, g := range gws {
		ids[i] = g.ID
	}
	live, err := s.fleet.Presence(ctx, ids)
	for _, g := range gws {
		g.IsActive = live[g.ID].Connections > 0
	}
	return err
}

func (s *Server) createGateway(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req gatewayRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	if err := req.validate(true); err != nil {
		return err
	}
	g := &store.Gateway{
		OrganizationID:    p.OrganizationID,
		Name:              *req.Name,
		DisplayName:       *req.DisplayName,
		Description:       deref(req.Description),
		Vhost:             *req.Vhost,
		IsCritical:        deref(req.IsCritical),
		FunctionalityType: "regular",
	}
	if req.FunctionalityType != nil {
		g.FunctionalityType = *req.FunctionalityType
	}
	if err := s.store.CreateGateway(r.Context(), g); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, g)
	return nil
}

func (s *Server) listGateways(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Gateways(r.Context(), p.OrganizationID, store.Page(page))
	if err != nil {
		return err
	}
	if err := s.withPresence(r.Context(), list...); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) getGateway(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	g, err := s.store.Gateway(r.Context(), p.OrganizationID, r.PathValue("gatewayId"))
	if err != nil {
		return err
	}
	if err := s.withPresence(r.Context(), g); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, g)
	return nil
}

// updateGateway changes displayName, description, isCritical and vhost. The
// name and functionalityType are fixed at registration: sending a different
// value is a 400 rather than a silent no-op.
func (s *Server) updateGateway(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req gatewayRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	if err := req.validate(false); err != nil {
		return err
	}
	g, err := s.store.UpdateGateway(r.Context(), p.OrganizationID, r.PathValue("gatewayId"), func(g *store.Gateway) error {
		if req.Name != nil && *req.Name != g.Name {
			return httpx.BadRequest("name: cannot be changed; register a new gateway instead")
		}
		if req.FunctionalityType != nil && *req.FunctionalityType != g.FunctionalityType {
			return httpx.BadRequest("functionalityType: cannot be changed; register a new gateway instead")
		}
		if req.DisplayName != nil {
			g.DisplayName = *req.DisplayName
		}
		if req.Description != nil {
			g.Description = *req.Description
		}
		if req.Vhost != nil {
			g.Vhost = *req.Vhost
		}
		if req.IsCritical != nil {
			g.IsCritical = *req.IsCritical
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.withPresence(r.Context(), g); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, g)
	return nil
}

// deleteGateway removes the gateway, its tokens and deployments in one
// transaction, then closes its live connections.
func (s *Server) deleteGateway(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id := r.PathValue("gatewayId")
	if err := s.fleet.DeleteGateway(r.Context(), p.OrganizationID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// IssuedToken answers a token issue: the plain token, shown only here.
type IssuedToken struct {
	*store.IssuedToken
	Message string `json:"message"`
}

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	t, err := s.store.IssueToken(r.Context(), p.OrganizationID, r.PathValue("gatewayId"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusCreated, IssuedToken{t, "Token created: store it now, it is not shown again"})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Tokens(r.Context(), p.OrganizationID, r.PathValue("gatewayId"), store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

// revokeToken revokes the token and closes the connections that used it.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	tokenID := r.PathValue("tokenId")
	if err := s.fleet.RevokeToken(r.Context(), p.OrganizationID, r.PathValue("gatewayId"), tokenID); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"message": "Token revoked successfully"})
	return nil
}

// GatewayStatus is one gateway of GET /api/v1/status/gateways.
type GatewayStatus struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	IsActive    bool       `json:"isActive"`
	IsCritical  bool       `json:"isCritical"`
	Connections int        `json:"connections"`
	LastSeenAt  *time.Time `json:"lastSeenAt"`
}

// gatewayStatuses reports liveness from the hub's registry, never from a
// stored flag; lastSeenAt is the live connections' last activity, or when
// the gateway has none, when it was last seen (store.GatewayStatus).
func (s *Server) gatewayStatuses(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.GatewayStatuses(r.Context(), p.OrganizationID, r.URL.Query().Get("gatewayId"), store.Page(page))
	if err != nil {
		return err
	}
	ids := make([]string, len(list))
	for i, g := range list {
		ids[i] = g.ID
	}
	live, err := s.fleet.Presence(r.Context(), ids)
	if err != nil {
		return err
	}
	out := make([]GatewayStatus, len(list))
	for i, g := range list {
		n, seen := live[g.ID].Connections, live[g.ID].LastSeen
		st := GatewayStatus{ID: g.ID, Name: g.Name, IsActive: n > 0, IsCritical: g.IsCritical, Connections: n, LastSeenAt: g.LastSeen}
		// Microseconds, as stored, so that the live and the stored time of
		// one moment compare equal.
		seen = seen.UTC().Truncate(time.Microsecond)
		if !seen.IsZero() && (st.LastSeenAt == nil || seen.After(*st.LastSeenAt)) {
			st.LastSeenAt = &seen
		}
		out[i] = st
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(out, total, page))
	return nil
}
