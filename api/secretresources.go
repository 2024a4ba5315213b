package api

// Secrets as resources (contract §7): values gateways need at run time,
// referred to from API definitions as {{ secret "name" }}. The value is
// taken, sealed and never answered. (secrets.go is about the mTLS keys
// inside API definitions.)

import (
	"context"
	"net/http"
	"unicode/utf8"

	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/store"
)

// maxSecretValueBytes bounds a secret's value (a credential, a key or a
// certificate chain).
const maxSecretValueBytes = 64 << 10

type secretRequest struct {
	Name        *string `json:"name"`
	Value       *string `json:"value"`
	Description *string `json:"description"`
	creating    bool
}

func (q *secretRequest) Validate(context.Context) error {
	var errs httpx.FieldErrors
	if q.creating || q.Name != nil {
		checkResourceName(&errs, "name", deref(q.Name))
	}
	switch {
	case q.Value == nil && q.creating:
		errs.Add("value", "is required")
	case q.Value == nil:
	case *q.Value == "":
		errs.Add("value", "must not be empty")
	case len(*q.Value) > maxSecretValueBytes:
		errs.Add("value", "must be at most %d bytes", maxSecretValueBytes)
	case !utf8.ValidString(*q.Value):
		errs.Add("value", "must be valid UTF-8 (encode binary values, for example in base64)")
	}
	if q.Description != nil {
		httpx.CheckText(&errs, "description", *q.Description, false, 1024)
	}
	if !q.creating && q.Value == nil && q.Description == nil {
		errs.Add("value", "is required (or description): nothing to change")
	}
	return errs.Err()
}

func (s *Server) createSecret(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	req := secretRequest{creating: true}
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	sec := &store.Secret{OrganizationID: p.OrganizationID, Name: *req.Name, Description: deref(req.Description)}
	if err := s.store.CreateSecret(r.Context(), sec, *req.Value); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, sec)
	return nil
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	list, total, err := s.store.Secrets(r.Context(), p.OrganizationID, store.Page(page))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, httpx.NewList(list, total, page))
	return nil
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sec, err := s.store.Secret(r.Context(), p.OrganizationID, r.PathValue("secretName"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, sec)
	return nil
}

func (s *Server) updateSecret(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req secretRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	name := r.PathValue("secretName")
	if req.Name != nil && *req.Name != name {
		return httpx.BadRequest("name: cannot be changed (APIs refer to the secret by it): make a new secret instead")
	}
	sec, err := s.store.UpdateSecret(r.Context(), p.OrganizationID, name, req.Value, req.Description)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, sec)
	return nil
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.store.DeleteSecret(r.Context(), p.OrganizationID, r.PathValue("secretName")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
