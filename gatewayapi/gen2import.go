package gatewayapi

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"reflect"
	"strings"

	"platform-api/apidef"
	"platform-api/httpx"
	"platform-api/store"
)

// Bounds of an import (contract §6, import-gateway-artifacts).
const (
	maxImportBytes     = 8 << 20  // the whole multipart request
	MaxImportJSONBytes = 16 << 20 // artifacts.json, uncompressed
	maxImportEntries   = 16       // files in the zip
	maxImportArtifacts = 1000
)

// importedArtifact is one entry of artifacts.json.
type importedArtifact struct {
	DPID          string      `json:"dpid"`
	Configuration restAPIBody `json:"configuration"`
	Status        string      `json:"status"`
	CreatedAt     any         `json:"createdAt"`
	UpdatedAt     any         `json:"updatedAt"`
	DeployedAt    any         `json:"deployedAt"`
	Properties    any         `json:"properties"`
}

// restAPIBody is the part of a RestApi document (contract §6) an import
// reads.
type restAPIBody struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		DisplayName string `json:"displayName"`
		Version     string `json:"version"`
		Context     string `json:"context"`
		Upstream    map[string]struct {
			URL string `json:"url"`
			Ref string `json:"ref"`
		} `json:"upstream"`
		UpstreamDefinitions []struct {
			Name      string `json:"name"`
			BasePath  string `json:"basePath"`
			Upstreams []struct {
				URL string `json:"url"`
			} `json:"upstreams"`
		} `json:"upstreamDefinitions"`
		Operations []struct {
			Method   string `json:"method"`
			Path     string `json:"path"`
			Policies []struct {
				Name   string          `json:"name"`
				Params json.RawMessage `json:"params"`
			} `json:"policies"`
		} `json:"operations"`
	} `json:"spec"`
}

// projectAnnotation names the project an imported API belongs in.
const projectAnnotation = "gateway.api-platform.wso2.com/project-id"

// ImportResult is the outcome of one imported artifact.
type ImportResult struct {
	ID     string `json:"id,omitempty"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// importArtifacts stores the APIs a second-generation gateway created by
// itself. Each artifact is stored in its own transaction, idempotently per
// dpid; an artifact that cannot be stored is reported in the answer, never
// a 500 for the request.
func (s *Server) importArtifacts(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	arts, err := readArtifacts(w, r)
	if err != nil {
		return err
	}
	type answer struct {
		Total     int                     `json:"total"`
		Success   int                     `json:"success"`
		Failed    int                     `json:"failed"`
		Artifacts map[string]ImportResult `json:"artifacts"`
	}
	out := answer{Total: len(arts), Artifacts: map[string]ImportResult{}}
	for i, a := range arts {
		res := s.importArtifact(r, g, &a)
		key := a.DPID
		if key == "" {
			key = fmt.Sprintf("[%d]", i)
		}
		out.Artifacts[key] = res
		if res.Status == "success" {
			out.Success++
		} else {
			out.Failed++
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) importArtifact(r *http.Request, g *store.GatewayIdentity, art *importedArtifact) ImportResult {
	fail := func(format string, a ...any) ImportResult {
		return ImportResult{Status: "failed", Error: fmt.Sprintf(format, a...)}
	}
	if art.DPID == "" || len(art.DPID) > 128 {
		return fail("dpid: is required (at most 128 characters)")
	}
	a, projectID, err := apiFromRestAPI(&art.Configuration)
	if err != nil {
		return fail("configuration: %v", err)
	}
	a.OrganizationID = g.OrganizationID
	apidef.ApplyDefaults(a)
	a.ProjectID = "00000000-0000-4000-8000-000000000000" // checked by the store; validation needs the form
	if err := apidef.Validate(r.Context(), a); err != nil {
		_, desc := httpx.ErrorStatus(err)
		return fail("configuration: %s", desc)
	}
	id, _, err := s.store.ImportArtifact(r.Context(), g.GatewayID, art.DPID, a, projectID)
	if err != nil {
		status, desc := httpx.ErrorStatus(err)
		if status >= 500 {
			s.log.Error("import of a gateway artifact failed", "gateway", g.GatewayID, "err", err)
		}
		return fail("%s", desc)
	}
	return ImportResult{ID: id, Status: "success"}
}

// apiFromRestAPI maps a RestApi document onto our model: its displayName is
// the API's name, its one upstream the endpoint of a backend service
// "main", its operations' policies request policies.
func apiFromRestAPI(d *restAPIBody) (*store.API, string, error) {
	if d.Kind != "RestApi" {
		return nil, "", fmt.Errorf("kind: must be RestApi, not %q", d.Kind)
	}
	spec := &d.Spec
	a := &store.API{Name: spec.DisplayName, DisplayName: spec.DisplayName, Version: spec.Version, Context: spec.Context,
		Handle: d.Metadata.Name}
	if a.Handle == "" || len(a.Handle) > 253 {
		return nil, "", errors.New("metadata.name: is required (at most 253 characters)")
	}
	url := ""
	if up, ok := spec.Upstream["main"]; ok {
		url = up.URL
		if up.Ref != "" {
			for _, def := range spec.UpstreamDefinitions {
				if def.Name == up.Ref && len(def.Upstreams) > 0 {
					url = def.Upstreams[0].URL + def.BasePath
					if !strings.Contains(url, "://") {
						url = "http://" + url
					}
				}
			}
		}
	}
	if url == "" {
		return nil, "", errors.New("spec.upstream.main: needs a url (or a ref to an upstream definition)")
	}
	a.BackendServices = []store.BackendService{{Name: "main", IsDefault: true, Endpoints: []store.Endpoint{{URL: url}}}}
	for _, op := range spec.Operations {
		req := &store.OperationRequest{Method: op.Method, Path: op.Path}
		for _, p := range op.Policies {
			req.RequestPolicies = append(req.RequestPolicies, store.Policy{Name: p.Name, Params: p.Params})
		}
		a.Operations = append(a.Operations, store.Operation{Request: req})
	}
	projectID := d.Metadata.Annotations[projectAnnotation]
	if projectID != "" && !httpx.IsID(projectID) {
		return nil, "", fmt.Errorf("metadata.annotations[%q]: must be a project UUID (%s)", projectAnnotation, httpx.IDDescription)
	}
	return a, projectID, nil
}

// readArtifacts reads the multipart request: a part "artifacts" holding a
// zip whose artifacts.json lists the artifacts, and a part "total". The zip
// is read with bounds on its size, its entries and what they inflate to,
// and entries with paths other than a plain file name are refused.
func readArtifacts(w http.ResponseWriter, r *http.Request) ([]importedArtifact, error) {
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		return nil, httpx.BadRequest("the body must be multipart/form-data with a part \"artifacts\" (a zip) and a part \"total\"")
	}
	mr := multipart.NewReader(http.MaxBytesReader(w, r.Body, maxImportBytes), params["boundary"])
	var zipData []byte
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, multipartError(err)
		}
		if part.FormName() == "artifacts" {
			if zipData, err = io.ReadAll(part); err != nil {
				return nil, multipartError(err)
			}
		} else if _, err := io.Copy(io.Discard, part); err != nil {
			return nil, multipartError(err)
		}
	}
	if zipData == nil {
		return nil, httpx.BadRequest("artifacts: the part is missing: send the zip of artifacts.json in a part named \"artifacts\"")
	}
	zr, err := zip.NewReader(bytes.NewReader(zipData), int64(len(zipData)))
	if err != nil {
		return nil, httpx.BadRequest("artifacts: not a zip file: %v", err)
	}
	if len(zr.File) > maxImportEntries {
		return nil, httpx.BadRequest("artifacts: the zip holds %d files; at most %d", len(zr.File), maxImportEntries)
	}
	var jsonFile *zip.File
	for _, f := range zr.File {
		name := f.Name
		if name != path.Base(name) || strings.ContainsAny(name, `\:`) || name == ".." || strings.HasPrefix(name, ".") {
			return nil, httpx.BadRequest("artifacts: the zip entry %q is not a plain file name", name)
		}
		if name == "artifacts.json" {
			jsonFile = f
		}
	}
	if jsonFile == nil {
		return nil, httpx.BadRequest("artifacts: the zip holds no artifacts.json")
	}
	rc, err := jsonFile.Open()
	if err != nil {
		return nil, httpx.BadRequest("artifacts: artifacts.json cannot be read: %v", err)
	}
	defer rc.Close()
	// The header's sizes are the sender's word: count what inflates.
	data, err := io.ReadAll(io.LimitReader(rc, MaxImportJSONBytes+1))
	if err != nil {
		return nil, httpx.BadRequest("artifacts: artifacts.json cannot be read: %v", err)
	}
	if len(data) > MaxImportJSONBytes {
		return nil, httpx.Errorf(http.StatusRequestEntityTooLarge, "artifacts: artifacts.json inflates to more than %d bytes", MaxImportJSONBytes)
	}
	var arts []importedArtifact
	if err := httpx.CheckJSON(data, reflect.TypeOf(&arts), false); err != nil {
		_, desc := httpx.ErrorStatus(err)
		return nil, httpx.BadRequest("artifacts.json: %s", desc)
	}
	if err := json.Unmarshal(data, &arts); err != nil {
		return nil, httpx.BadRequest("artifacts.json: %v", err)
	}
	if len(arts) > maxImportArtifacts {
		return nil, httpx.BadRequest("artifacts.json: at most %d artifacts per request, not %d", maxImportArtifacts, len(arts))
	}
	return arts, nil
}

func multipartError(err error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return httpx.Errorf(http.StatusRequestEntityTooLarge, "the import is larger than %d bytes", maxImportBytes)
	}
	return httpx.BadRequest("the multipart body cannot be read: %v", err)
}
