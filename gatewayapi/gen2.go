package gatewayapi

// Routes of second-generation gateways (contract §6), authenticated with the
// gateway token like the rest of /api/internal/v1. These gateways exit on a
// 401, 403, 404, 409 or 422 from some of them, so answers are chosen with
// care: what a gateway sends is accepted as leniently as is safe, and only
// malformed JSON is a 400 (which it retries).

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"platform-api/document"
	"platform-api/httpx"
	"platform-api/store"
)

// Bounds of the second generation's requests.
const (
	maxManifestBytes   = 4 << 20 // policy definitions carry their schemas
	maxManifestDepth   = 128
	maxManifestItems   = 1000
	maxFetchBatch      = 100 // deployment ids per fetch-batch call
	maxExistsArtifacts = 1000
)

type manifestBody struct {
	Version           string            `json:"version"`
	FunctionalityType string            `json:"functionalityType"`
	Policies          []json.RawMessage `json:"policies"`
}

// postManifest records what a second-generation gateway reports about
// itself on every connect. Its connections waiting to know their generation
// learn it. The path's gateway must be the token's: any other is 404.
func (s *Server) postManifest(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	if id := r.PathValue("gatewayId"); id != g.GatewayID {
		return httpx.Errorf(http.StatusNotFound, "gateway %s not found", id)
	}
	if err := httpx.CheckJSONContentType(r); err != nil {
		return err
	}
	data, err := httpx.ReadBody(w, r, max(s.maxBody, maxManifestBytes))
	if err != nil {
		return err
	}
	var body manifestBody
	if err := httpx.CheckJSONDepth(data, reflect.TypeOf(&body), false, maxManifestDepth); err != nil {
		return err
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return httpx.JSONError(err)
	}
	m := &store.Manifest{Version: clip(body.Version, 64), FunctionalityType: clip(body.FunctionalityType, 32), Policies: []string{}}
	for _, p := range body.Policies[:min(len(body.Policies), maxManifestItems)] {
		if name := policyName(p); name != "" {
			m.Policies = append(m.Policies, name)
		}
	}
	if err := s.fleet.ReportManifest(r.Context(), g.GatewayID, g.OrganizationID, m); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// policyName is "name@version" of a policy definition (or its name alone,
// or the string itself when the gateway sends names).
func policyName(raw json.RawMessage) string {
	var def struct{ Name, Version string }
	if json.Unmarshal(raw, &def) != nil {
		var name string
		json.Unmarshal(raw, &name)
		return clip(name, 128)
	}
	if def.Version == "" {
		return clip(def.Name, 128)
	}
	return clip(def.Name+"@"+def.Version, 128)
}

// clip cuts s to at most n bytes, on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

type syncEntry struct {
	ArtifactID   string `json:"artifactId"`
	DeploymentID string `json:"deploymentId"`
	Kind         string `json:"kind"`
	State        string `json:"state"`
	DeployedAt   string `json:"deployedAt"`
	Etag         string `json:"etag"`
}

// etag names the content a deployment serves: its revision, in its vhost.
func etag(revisionID, vhost string) string {
	sum := sha256.Sum256([]byte(revisionID + "\n" + vhost))
	return hex.EncodeToString(sum[:8])
}

// syncDeployments lists, for a second-generation gateway starting, every
// API deployed to it or undeployed (or deleted) from it, with the time of
// that last action, so that it can diff against what it holds.
func (s *Server) syncDeployments(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return httpx.BadRequest("since: must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q", v)
		}
		since = t
	}
	entries, err := s.store.GatewaySync(r.Context(), g.GatewayID, since)
	if err != nil {
		return err
	}
	out := make([]syncEntry, len(entries))
	for i, e := range entries {
		out[i] = syncEntry{ArtifactID: e.APIID, DeploymentID: e.DeploymentID, Kind: "RestApi", State: e.State,
			DeployedAt: e.PerformedAt.UTC().Format(time.RFC3339Nano), Etag: etag(e.RevisionID, e.Vhost)}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"deployments": out})
	return nil
}

type fetchBatchBody struct {
	DeploymentIDs []string `json:"deploymentIds"`
}

// fetchBatch answers a tar.gz holding, for each requested deployment of the
// calling gateway, <deploymentId>/api.yaml: its RestApi document. Ids of
// other gateways' deployments are skipped, never served.
func (s *Server) fetchBatch(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	var body fetchBatchBody
	if err := httpx.DecodeFromGateway(w, r, s.maxBody, &body); err != nil {
		return err
	}
	if len(body.DeploymentIDs) > maxFetchBatch {
		return httpx.BadRequest("deploymentIds: at most %d per call, not %d", maxFetchBatch, len(body.DeploymentIDs))
	}
	release, err := s.answers.acquire(w, g.GatewayID)
	if err != nil {
		return err
	}
	defer release()
	deps, err := s.store.GatewayDeploymentsByID(r.Context(), g.GatewayID, body.DeploymentIDs)
	if err != nil {
		return err
	}
	// Written as it is produced: the answer holds one document and the
	// compressor's window, not the whole tar.gz.
	out := newStreamedAnswer(w, attachment("application/x-tar+gzip", ""))
	gz := gzip.NewWriter(out)
	tw := tar.NewWriter(gz)
	fetched := map[string]string{}
	for _, d := range deps {
		entry, err := s.docs.Get(r.Context(), d.APIID, d.RevisionID, document.Gen2, d.Vhost)
		if err != nil {
			return out.fail(r, s.log, err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: d.DeploymentID + "/api.yaml", Mode: 0o644, Size: int64(len(entry.YAML)),
			ModTime: entry.Modified, Typeflag: tar.TypeReg}); err != nil {
			return out.fail(r, s.log, err)
		}
		if _, err := tw.Write(entry.YAML); err != nil {
			return out.fail(r, s.log, err)
		}
		fetched[d.APIID] = d.RevisionID
	}
	if err := tw.Close(); err != nil {
		return out.fail(r, s.log, err)
	}
	if err := gz.Close(); err != nil {
		return out.fail(r, s.log, err)
	}
	s.fleet.Downloaded(g.GatewayID, fetched)
	return nil
}

type existsBody struct {
	ArtifactIDs []string `json:"artifactIds"`
}

// ArtifactExists is one answer of POST /artifacts/exists.
type ArtifactExists struct {
	ArtifactID string `json:"artifactId"`
	Exists     bool   `json:"exists"`
}

// artifactsExist tells a gateway which of the artifacts it holds still
// exist; it deletes the others. An API of another organization is
// answered as a missing one.
func (s *Server) artifactsExist(w http.ResponseWriter, r *http.Request, g *store.GatewayIdentity) error {
	var body existsBody
	if err := httpx.DecodeFromGateway(w, r, s.maxBody, &body); err != nil {
		return err
	}
	if len(body.ArtifactIDs) > maxExistsArtifacts {
		return httpx.BadRequest("artifactIds: at most %d per call, not %d", maxExistsArtifacts, len(body.ArtifactIDs))
	}
	var ids []string
	for _, id := range body.ArtifactIDs {
		if httpx.IsID(id) {
			ids = append(ids, id)
		}
	}
	exists, err := s.store.APIsExist(r.Context(), g.OrganizationID, ids)
	if err != nil {
		return err
	}
	out := make([]ArtifactExists, len(body.ArtifactIDs))
	for i, id := range body.ArtifactIDs {
		out[i] = ArtifactExists{ArtifactID: id, Exists: exists[id]}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"artifacts": out})
	return nil
}

// NotRouted words the 404 of an unknown gateway-facing path: an
// artifact kind's api-keys are the one gateways are known to ask for.
func NotRouted(path string) string {
	if strings.HasSuffix(path, "/api-keys") {
		return "this control plane serves API keys of REST APIs only (GET /api/internal/v1/apis/api-keys)"
	}
	return fmt.Sprintf("no route for %s", path)
}
