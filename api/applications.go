package api

import (
	"context"
	"net/http"

	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/store"
)

// Applications (contract §7): who calls APIs; they own keys, and
// second-generation gateways learn which keys each owns
// (application.updated).

type applicationRequest struct {
	Name        *string `json:"name"`
	DisplayName *string `json:"displayName"`
	Description *string `json:"description"`
	ProjectID   *string `json:"projectId"`
	creating    bool
}

func (a *applicationRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	switch {
	case a.Name != nil:
		checkName(&errs, "name", *a.Name)
	case a.creating:
		errs.Add("name", "is required")
	}
	if a.DisplayName != nil {
		httpx.CheckText(&errs, "displayName", *a.DisplayName, false, 100)
	}
	if a.Description != nil {
		httpx.CheckText(&errs, "description", *a.Description, false, 4096)
	}
	if a.ProjectID != nil && (a.creating || *a.ProjectID != "") && !httpx.IsID(*a.ProjectID) {
		errs.Add("projectId", "must be a project's id (%s)", httpx.IDDescription)
	}
	return errs.Err()
}

// applicationID is the path's application id; one not in canonical form
// names no application.
func applicationID(r *http.Request) (string, error) {
	id := r.PathValue("applicationId")
	if !httpx.IsID(id) {
		return "", httpx.Errorf(http.StatusNotFound, "application %s not found: %s", clip(id), httpx.IDDescription)
	}
	return id, nil
}

func (s *Server) createApplication(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	req := applicationRequest{creating: true}
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	a := &store.Application{OrganizationID: p.OrganizationID, Name: *req.Name, DisplayName: deref(req.DisplayName),
		Description: deref(req.Description), ProjectID: req.ProjectID}
	if a.DisplayName == "" {
		a.DisplayName = a.Name
	}
	if err := s.store.CreateApplication(r.Context(), a); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, a)
	return nil
}

func (s *Server) listApplications(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Applications(r.Context(), p.OrganizationID, r.URL.Query().Get("projectId"), store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) getApplication(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id, err := applicationID(r)
	if err != nil {
		return err
	}
	a, err := s.store.Application(r.Context(), p.OrganizationID, id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) updateApplication(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id, err := applicationID(r)
	if err != nil {
		return err
	}
	var req applicationRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	if req.DisplayName != nil && *req.DisplayName == "" {
		return httpx.BadRequest("displayName: must not be empty (gateways need a name to show)")
	}
	a, err := s.store.UpdateApplication(r.Context(), p.OrganizationID, id, store.ApplicationUpdate{Name: req.Name,
		DisplayName: req.DisplayName, Description: req.Description, ProjectID: req.ProjectID})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) deleteApplication(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id, err := applicationID(r)
	if err != nil {
		return err
	}
	if err := s.store.DeleteApplication(r.Context(), p.OrganizationID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
