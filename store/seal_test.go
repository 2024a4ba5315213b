package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"platform-api/store/pgtest"
)

func apiWithSecrets(orgID, projectID string) *API {
	return &API{OrganizationID: orgID, ProjectID: projectID, Name: "s", Context: "/s", Version: "v1", Provider: "admin",
		LifeCycleStatus: "CREATED", Type: "HTTP", Transport: []string{"https"},
		MTLS:            &MTLS{Enabled: true, ClientKey: "API-LEVEL-KEY"},
		BackendServices: []BackendService{{Name: "b", Endpoints: []Endpoint{{URL: "https://b", MTLS: &MTLS{ClientKey: "ENDPOINT-KEY"}}}}},
		Operations:      []Operation{{Request: &OperationRequest{Method: "GET", Path: "/"}}}}
}

// rawContains reports whether any stored text of the API tables holds s.
func rawContains(t *testing.T, db *DB, s string) bool {
	t.Helper()
	for _, q := range []string{`SELECT settings FROM apis`, `SELECT config FROM api_backend_services`, `SELECT definition FROM api_revisions`} {
		rows, err := db.read.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var v string
			rows.Scan(&v)
			if strings.Contains(v, s) {
				rows.Close()
				return true
			}
		}
		rows.Close()
	}
	return false
}

// TestSecretsSealedAtRest: endpoint credentials were stored (and answered)
// in clear.
func TestSecretsSealedAtRest(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	a, err := db.CreateAPI(ctx, apiWithSecrets(o.ID, ps[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	g := mustGateway(t, db, o.ID, "gw")
	rev, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: g.ID}}, func(*Revision) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rawContains(t, db, "API-LEVEL-KEY") || rawContains(t, db, "ENDPOINT-KEY") || !rawContains(t, db, sealedPrefix+testSealer.KeyID()) {
		t.Fatal("a secret is stored in clear")
	}
	if !IsSealed(a.MTLS.ClientKey) {
		t.Fatalf("read back unsealed: %q", a.MTLS.ClientKey)
	}
	got, err := db.Revision(ctx, a.ID, rev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.OpenSecrets(got.API); err != nil || got.API.MTLS.ClientKey != "API-LEVEL-KEY" ||
		got.API.BackendServices[0].Endpoints[0].MTLS.ClientKey != "ENDPOINT-KEY" {
		t.Fatalf("opened %+v, %v", got.API.MTLS, err)
	}
	// A sealed value moved to another API does not open there.
	other := *got.API
	other.ID = newID()
	other.MTLS = &MTLS{ClientKey: a.MTLS.ClientKey}
	other.BackendServices = nil
	if err := db.OpenSecrets(&other); err == nil {
		t.Fatal("a secret opened under another API's id")
	}
}

// TestKeyRotationAndUpgrade: a database written in clear (before sealing)
// is sealed at start, and a new first key reseals every secret.
func TestKeyRotationAndUpgrade(t *testing.T) {
	path := freshDSN(t)
	ctx := context.Background()
	db, err := Open(ctx, testConfig(path))
	if err != nil {
		t.Fatal(err)
	}
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	a, err := db.CreateAPI(ctx, apiWithSecrets(o.ID, ps[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	g := mustGateway(t, db, o.ID, "gw")
	if _, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: g.ID}}, func(*Revision) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// What an older version wrote: the secret in clear.
	if _, err := db.write.Exec(`UPDATE apis SET settings = '{"mtls":{"enabled":true,"enforceIfClientCertPresent":false,"verifyClient":false,"clientKey":"OLD-CLEAR-KEY"}}'`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	newKey := bytes.Repeat([]byte{9}, 32)
	rotated, _ := NewSealer(newKey, bytes.Repeat([]byte{7}, 32))
	db, err = Open(ctx, Config{DSN: path, Sealer: rotated})
	if err != nil {
		t.Fatal(err)
	}
	if rawContains(t, db, "OLD-CLEAR-KEY") || rawContains(t, db, sealedPrefix+testSealer.KeyID()) || !rawContains(t, db, sealedPrefix+rotated.KeyID()) {
		t.Fatal("secrets not resealed under the new key at start")
	}
	db.Close()

	// The old key can now go.
	only, _ := NewSealer(newKey)
	db, err = Open(ctx, Config{DSN: path, Sealer: only})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.API(ctx, o.ID, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.OpenSecrets(got); err != nil || got.MTLS.ClientKey != "OLD-CLEAR-KEY" {
		t.Fatalf("after rotation: %q, %v", got.MTLS.ClientKey, err)
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "encryption.key")
	s1, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatal(err, created)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %o", fi.Mode().Perm())
	}
	s2, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created || s2.KeyID() != s1.KeyID() {
		t.Fatal("key file not reused", err)
	}
	// Processes starting at once on a new key file agree on one key.
	shared := filepath.Join(t.TempDir(), "encryption.key")
	ids := make(chan string, 8)
	var wg sync.WaitGroup
	for range cap(ids) {
		wg.Go(func() {
			s, _, err := LoadOrCreateKeyFile(shared)
			if err != nil {
				t.Error(err)
				return
			}
			ids <- s.KeyID()
		})
	}
	wg.Wait()
	close(ids)
	first := <-ids
	for id := range ids {
		if id != first {
			t.Fatalf("keys %s and %s made for one file", first, id)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(shared), ".encryption-key-*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	os.WriteFile(path, []byte("# comment\n"+base64.StdEncoding.EncodeToString([]byte("short"))+"\n"), 0o600)
	if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad key line: %v", err)
	}
}

// TestDatabaseFilesOwnerOnly: database files were created with the
// process's umask (0644).
func TestDatabaseFilesOwnerOnly(t *testing.T) {
	if pgtest.Postgres() {
		t.Skip("SQLite files; PostgreSQL keeps its own")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "t.db")
	os.WriteFile(path, nil, 0o644) // an existing file, too open
	db, err := Open(context.Background(), testConfig(path))
	if err != nil {
		t.Fatal(err)
	}
	mustOrg(t, db) // writes, so the WAL exists
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s has mode %o", p, fi.Mode().Perm())
		}
	}
	db.Close()
}
