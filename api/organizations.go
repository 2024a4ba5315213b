package api

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"platform-api/store"
)

type organizationRequest struct {
	ID     string `json:"id"`
	Handle string `json:"handle"`
	Name   string `json:"name"`
	Region string `json:"region"`
}

var handlePattern = regexp.MustCompile(`^(?:[a-z]|[a-z][a-z0-9_-]*[a-z0-9])$`)

func (o *organizationRequest) validate(context.Context) error {
	var errs fieldErrors
	if o.ID != "" {
		if !isID(o.ID) {
			errs.add("id", "must be a UUID such as 3f2c1d9e-8b7a-4c6d-9e0f-1a2b3c4d5e6f")
		}
	}
	switch {
	case o.Handle == "":
		errs.add("handle", "is required")
	case len(o.Handle) > 63 || !handlePattern.MatchString(o.Handle):
		errs.add("handle", "must be 1 to 63 characters of a-z, 0-9, '_' and '-', start with a letter and end with a letter or digit")
	}
	checkText(&errs, "name", o.Name, true, 256)
	checkText(&errs, "region", o.Region, true, 64)
	return errs.err()
}

// checkText checks a free-text field: required or not, at most max
// characters, and no control characters.
func checkText(errs *fieldErrors, path, v string, required bool, max int) {
	switch {
	case v == "" && required:
		errs.add(path, "is required")
	case !utf8.ValidString(v):
		errs.add(path, "must be valid UTF-8")
	case utf8.RuneCountInString(v) > max:
		errs.add(path, "must be at most %d characters", max)
	case strings.ContainsFunc(v, isControl):
		errs.add(path, "must not contain control characters")
	}
}

func isControl(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' || r == 0x7f }

func (s *Server) createOrganization(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req organizationRequest
	if err := decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	if req.ID == "" {
		req.ID = p.OrganizationID
	}
	if !strings.EqualFold(req.ID, p.OrganizationID) {
		return errorf(http.StatusForbidden, "id must equal the organization claim of your token (%s)", p.OrganizationID)
	}
	o := &store.Organization{ID: p.OrganizationID, Handle: req.Handle, Name: req.Name, Region: req.Region}
	if err := s.store.CreateOrganization(r.Context(), o); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, o)
	return nil
}

func (s *Server) getOrganization(w http.ResponseWriter, r *http.Request, p Principal) error {
	o, err := s.store.Organization(r.Context(), p.OrganizationID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}
