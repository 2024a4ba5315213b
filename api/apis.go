package api

import (
	"encoding/json"
	"net/http"
	"platform-api/apidef"
	"platform-api/httpx"
	"reflect"
	"strings"

	"platform-api/auth"
	"platform-api/store"
)

// apiRequest is the body of POST and PUT. The read-only timestamps shadow
// the embedded ones so that whatever a client echoes back there is ignored
// rather than parsed.
type apiRequest struct {
	store.API
	CreatedAt any `json:"createdAt"`
	UpdatedAt any `json:"updatedAt"`
}

func (s *Server) createAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req apiRequest
	if err := httpx.Decode(w, r, s.maxBody, &req); err != nil {
		return err
	}
	a := &req.API
	a.ID, a.OrganizationID = "", p.OrganizationID
	apidef.ApplyDefaults(a)
	if err := apidef.Validate(r.Context(), a); err != nil {
		return err
	}
	if err := checkSecretInput(a, true); err != nil {
		return err
	}
	stored, err := s.store.CreateAPI(r.Context(), a)
	if err != nil {
		return err
	}
	return s.writeAPI(w, http.StatusCreated, stored)
}

func (s *Server) getAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	a, err := s.store.API(r.Context(), p.OrganizationID, r.PathValue("apiId"))
	if err != nil {
		return err
	}
	return s.writeAPI(w, http.StatusOK, a)
}

// immutableAPIFields may be sent in a PUT only with their stored values.
var immutableAPIFields = []string{"name", "context", "version", "projectId"}

// updateAPI replaces the top-level fields present in the body; the others
// keep their stored values. The body follows the same rules as a create
// (exact field names, no unknown field), and the merged API is validated as
// a whole.
func (s *Server) updateAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := httpx.CheckJSONContentType(r); err != nil {
		return err
	}
	raw, err := httpx.ReadBody(w, r, s.maxBody)
	if err != nil {
		return err
	}
	var req apiRequest
	if err := httpx.DecodeJSON(raw, &req, true); err != nil {
		return err
	}
	if err := checkSecretInput(&req.API, false); err != nil {
		return err
	}
	// The names present, exactly as checked against apiRequest above.
	var present map[string]json.RawMessage
	if err := json.Unmarshal(raw, &present); err != nil {
		return httpx.JSONError(err)
	}
	stored, err := s.store.UpdateAPI(r.Context(), p.OrganizationID, r.PathValue("apiId"), func(a *store.API) error {
		var errs httpx.FieldErrors
		for _, name := range immutableAPIFields {
			if _, ok := present[name]; ok && jsonField(&req.API, name).String() != jsonField(a, name).String() {
				errs.Add(name, "cannot be changed: name, context, version and projectId are immutable; create a new API or version instead")
			}
		}
		if err := errs.Err(); err != nil {
			return err
		}
		kept := storedSecrets(a)
		for name := range present {
			if f := jsonField(a, name); f.IsValid() && !readOnlyAPIField(name) {
				f.Set(jsonField(&req.API, name))
			}
		}
		if err := keepMaskedSecrets(a, kept); err != nil {
			return err
		}
		apidef.ApplyDefaults(a)
		return apidef.Validate(r.Context(), a)
	})
	if err != nil {
		return err
	}
	return s.writeAPI(w, http.StatusOK, stored)
}

func readOnlyAPIField(name string) bool {
	switch name {
	case "id", "organizationId", "createdAt", "updatedAt":
		return true
	}
	return false
}

// jsonField returns the field of a whose JSON name is name, or an invalid
// Value when there is none.
func jsonField(a *store.API, name string) reflect.Value {
	v := reflect.ValueOf(a).Elem()
	t := v.Type()
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if tag == name {
			return v.Field(i)
		}
	}
	return reflect.Value{}
}

// deleteAPI deletes the API with its deployments in one transaction; the
// gateways that ran it are told to undeploy it.
func (s *Server) deleteAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.fleet.DeleteAPI(r.Context(), p.OrganizationID, r.PathValue("apiId")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
