package api

import (
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"go.yaml.in/yaml/v3"

	"platform-api/apidef"
	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/openapi"
	"platform-api/store"
)

// OpenAPI in: import a document as a new API, check one without storing,
// replace an API's operations from a new version of its document, and
// answer the document kept with an API (or one made from it).

// openAPIMediaTypes are the content types an OpenAPI document may be sent
// with; the body is parsed as YAML, of which JSON is a part, either way.
var openAPIMediaTypes = map[string]string{
	"application/json":                 "application/json",
	"application/yaml":                 "application/yaml",
	"application/x-yaml":               "application/yaml",
	"text/yaml":                        "application/yaml",
	"text/x-yaml":                      "application/yaml",
	"application/vnd.oai.openapi":      "application/yaml",
	"application/vnd.oai.openapi+json": "application/json",
	"application/vnd.oai.openapi+yaml": "application/yaml",
	"application/openapi+json":         "application/json",
	"application/openapi+yaml":         "application/yaml",
}

// readOpenAPI reads an OpenAPI document body: its content type (415
// unless YAML or JSON) and at most the import limit of bytes (413).
func (s *Server) readOpenAPI(w http.ResponseWriter, r *http.Request) (*store.OpenAPIDocument, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	kept, ok := openAPIMediaTypes[mt]
	if err != nil || !ok {
		if len(ct) > 100 {
			ct = ct[:100] + "…"
		}
		return nil, httpx.Errorf(http.StatusUnsupportedMediaType,
			"Content-Type must be application/yaml or application/json, not %q: with curl, -H 'Content-Type: application/yaml' --data-binary @openapi.yaml", ct)
	}
	// Only one import parses at a time per slot: a parse holds several
	// times the document in memory.
	select {
	case s.openAPISlots <- struct{}{}:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	data, err := httpx.ReadBody(w, r, s.maxOpenAPI)
	if err != nil {
		<-s.openAPISlots
		return nil, err
	}
	return &store.OpenAPIDocument{ContentType: kept, Document: data}, nil
}

// overrides are the query parameters that replace what is derived.
func overrides(r *http.Request) openapi.Overrides {
	q := r.URL.Query()
	return openapi.Overrides{Name: q.Get("name"), Version: q.Get("version"), Context: q.Get("context"), BackendURL: q.Get("backendUrl")}
}

// importedAPI parses the document into the API it describes, defaults
// applied and validated with the rules of every API.
func (s *Server) importedAPI(ctx context.Context, r *http.Request, doc *store.OpenAPIDocument, p auth.Principal, projectID string) (*openapi.Result, error) {
	defer func() { <-s.openAPISlots }()
	res, err := openapi.Import(ctx, doc.Document, overrides(r))
	if err != nil {
		return nil, err
	}
	a := res.API
	a.OrganizationID, a.ProjectID = p.OrganizationID, projectID
	apidef.ApplyDefaults(a)
	if err := apidef.Validate(ctx, a); err != nil {
		return nil, err
	}
	return res, nil
}

// importOpenAPI creates an API from an OpenAPI document, which is kept
// with it.
func (s *Server) importOpenAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	projectID := r.URL.Query().Get("projectId")
	if projectID == "" {
		return httpx.BadRequest("projectId: is required (?projectId=<project UUID>): the project the API is created in")
	}
	doc, err := s.readOpenAPI(w, r)
	if err != nil {
		return err
	}
	res, err := s.importedAPI(r.Context(), r, doc, p, projectID)
	if err != nil {
		return err
	}
	stored, err := s.store.CreateAPIWithOpenAPI(r.Context(), res.API, doc)
	if err != nil {
		return err
	}
	return s.writeAPI(w, http.StatusCreated, stored)
}

// ImportCheck is the answer of validate-openapi: the API that importing
// the document would create, and what of the document has no place in it.
type ImportCheck struct {
	API            *store.API `json:"api"`
	OpenAPIVersion string     `json:"openapiVersion"`
	Warnings       []string   `json:"warnings"`
}

// validateOpenAPI answers the API that importing the document would
// create, storing nothing. Without projectId the API is checked as if it
// were created in some project (and answered without one).
func (s *Server) validateOpenAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	projectID := r.URL.Query().Get("projectId")
	doc, err := s.readOpenAPI(w, r)
	if err != nil {
		return err
	}
	checkAs := projectID
	if checkAs == "" {
		checkAs = "00000000-0000-0000-0000-000000000000"
	}
	res, err := s.importedAPI(r.Context(), r, doc, p, checkAs)
	if err != nil {
		return err
	}
	res.API.ProjectID = projectID
	if res.API.Operations == nil {
		res.API.Operations = []store.Operation{}
	}
	warnings := res.Warnings
	if warnings == nil {
		warnings = []string{}
	}
	httpx.WriteJSON(w, http.StatusOK, ImportCheck{API: masked(res.API), OpenAPIVersion: res.Version, Warnings: warnings})
	return nil
}

// OperationRef names an operation by method and path.
type OperationRef struct {
	Method string `json:"method"`
	Path   string `json:"path"`
}

// OpenAPIUpdate is the answer of PUT /apis/{apiId}/openapi.
type OpenAPIUpdate struct {
	Added    []OperationRef `json:"added"`
	Removed  []OperationRef `json:"removed"`
	Kept     []OperationRef `json:"kept"`
	Warnings []string       `json:"warnings"`
	API      *store.API     `json:"api"`
}

// updateOpenAPI replaces the API's operations with the document's: an
// operation kept (same method and path) keeps its backends, authentication
// and policies and takes its name and description from the document; the
// API's backends, security and policies stay as they are. The document
// replaces the one kept.
func (s *Server) updateOpenAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	doc, err := s.readOpenAPI(w, r)
	if err != nil {
		return err
	}
	res, err := func() (*openapi.Result, error) {
		defer func() { <-s.openAPISlots }()
		return openapi.ImportOperations(r.Context(), doc.Document)
	}()
	if err != nil {
		return err
	}
	var out OpenAPIUpdate
	stored, err := s.store.UpdateAPIWithOpenAPI(r.Context(), p.OrganizationID, r.PathValue("apiId"), doc, func(a *store.API) error {
		out = OpenAPIUpdate{Added: []OperationRef{}, Removed: []OperationRef{}, Kept: []OperationRef{}}
		old := map[string]store.Operation{}
		for _, op := range a.Operations {
			if op.Request != nil {
				old[op.Request.Method+" "+op.Request.Path] = op
			}
		}
		ops := make([]store.Operation, 0, len(res.API.Operations))
		for _, op := range res.API.Operations {
			key := op.Request.Method + " " + op.Request.Path
			ref := OperationRef{op.Request.Method, op.Request.Path}
			if prev, ok := old[key]; ok {
				prev.Name, prev.Description = op.Name, op.Description
				op = prev
				delete(old, key)
				out.Kept = append(out.Kept, ref)
			} else {
				out.Added = append(out.Added, ref)
			}
			ops = append(ops, op)
		}
		for _, op := range a.Operations {
			if op.Request != nil {
				if _, gone := old[op.Request.Method+" "+op.Request.Path]; gone {
					out.Removed = append(out.Removed, OperationRef{op.Request.Method, op.Request.Path})
				}
			}
		}
		a.Operations = ops
		apidef.ApplyDefaults(a)
		return apidef.Validate(r.Context(), a)
	})
	if err != nil {
		return err
	}
	out.Warnings = res.Warnings
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	out.API = masked(stored)
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// getOpenAPI answers the document kept with the API (or with one of its
// revisions, ?revisionId=) exactly as it was sent; for an API made without
// one, an OpenAPI 3.1 document made from its operations, in YAML, or JSON
// when the client accepts JSON and not YAML.
func (s *Server) getOpenAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	a, doc, err := s.store.OpenAPI(r.Context(), p.OrganizationID, r.PathValue("apiId"), r.URL.Query().Get("revisionId"))
	if err != nil {
		return err
	}
	if doc != nil {
		w.Header().Set("Content-Type", doc.ContentType)
		w.Write(doc.Document)
		return nil
	}
	gen := openapi.Generate(a)
	accept := r.Header.Get("Accept")
	if strings.Contains(accept, "json") && !strings.Contains(accept, "yaml") {
		data, err := json.MarshalIndent(gen, "", "  ")
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(data, '\n'))
		return nil
	}
	data, err := yaml.Marshal(gen)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(data)
	return nil
}
