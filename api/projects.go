package api

import (
	"context"
	"net/http"
	"platform-api/httpx"

	"platform-api/auth"
	"platform-api/store"
)

type projectRequest struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	// creating is set by the handler: a POST needs a name, a PUT does not.
	creating bool
}

func (p *projectRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	if p.Name != nil || p.creating {
		httpx.CheckText(&errs, "name", deref(p.Name), true, 128)
	}
	if p.Description != nil {
		httpx.CheckText(&errs, "description", *p.Description, false, 4096)
	}
	return errs.Err()
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	req := projectRequest{creating: true}
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	proj := &store.Project{OrganizationID: p.OrganizationID, Name: *req.Name, Description: deref(req.Description)}
	if err := s.store.CreateProject(r.Context(), proj); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, proj)
	return nil
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Projects(r.Context(), p.OrganizationID, store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	proj, err := s.store.Project(r.Context(), p.OrganizationID, r.PathValue("projectId"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, proj)
	return nil
}

func (s *Server) updateProject(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req projectRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	proj, err := s.store.UpdateProject(r.Context(), p.OrganizationID, r.PathValue("projectId"),
		store.ProjectUpdate{Name: req.Name, Description: req.Description})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, proj)
	return nil
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.store.DeleteProject(r.Context(), p.OrganizationID, r.PathValue("projectId")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
