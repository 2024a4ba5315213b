package api

import (
	"context"
	"net/http"
	"platform-api/httpx"
	"regexp"
	"strings"

	"platform-api/auth"
	"platform-api/store"
)

type organizationRequest struct {
	ID     string `json:"id"`
	Handle string `json:"handle"`
	Name   string `json:"name"`
	Region string `json:"region"`
}

var handlePattern = regexp.MustCompile(`^(?:[a-z]|[a-z][a-z0-9_-]*[a-z0-9])$`)

func (o *organizationRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	if o.ID != "" {
		if !httpx.IsID(o.ID) {
			errs.Add("id", "must be a UUID such as 3f2c1d9e-8b7a-4c6d-9e0f-1a2b3c4d5e6f")
		}
	}
	switch {
	case o.Handle == "":
		errs.Add("handle", "is required")
	case len(o.Handle) > 63 || !handlePattern.MatchString(o.Handle):
		errs.Add("handle", "must be 1 to 63 characters of a-z, 0-9, '_' and '-', start with a letter and end with a letter or digit")
	}
	httpx.CheckText(&errs, "name", o.Name, true, 256)
	httpx.CheckText(&errs, "region", o.Region, true, 64)
	return errs.Err()
}

func (s *Server) createOrganization(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req organizationRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	if req.ID == "" {
		req.ID = p.OrganizationID
	}
	if !strings.EqualFold(req.ID, p.OrganizationID) {
		return httpx.Errorf(http.StatusForbidden, "id must equal the organization claim of your token (%s)", p.OrganizationID)
	}
	o := &store.Organization{ID: p.OrganizationID, Handle: req.Handle, Name: req.Name, Region: req.Region}
	if err := s.store.CreateOrganization(r.Context(), o); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, o)
	return nil
}

func (s *Server) getOrganization(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	o, err := s.store.Organization(r.Context(), p.OrganizationID)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, o)
	return nil
}
