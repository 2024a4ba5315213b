package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"platform-api/store/pgtest"
)

// TestMain runs the tests on SQLite and, when PLATFORM_TEST_POSTGRES is
// set, again on PostgreSQL.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// freshDSN returns a new database of the store under test: a file under
// t.TempDir, or a PostgreSQL schema of the test's own.
func freshDSN(t testing.TB) string {
	t.Helper()
	if pgtest.Postgres() {
		return pgtest.Schema(t)
	}
	return filepath.Join(t.TempDir(), "test.db")
}

// MustOpen opens a migrated database of the store under test.
func MustOpen(t testing.TB) *DB {
	t.Helper()
	db, err := Open(context.Background(), testConfig(freshDSN(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testSealer seals with a fixed test key.
var testSealer, _ = NewSealer(bytes.Repeat([]byte{7}, 32))

func testConfig(path string) Config { return Config{DSN: path, Sealer: testSealer} }

func mustOrg(t testing.TB, db *DB) *Organization {
	t.Helper()
	o := &Organization{ID: newID(), Handle: "h" + newID()[:8], Name: "Org", Region: "eu"}
	if err := db.CreateOrganization(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOrganizationWithDefaultProject(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	o := mustOrg(t, db)
	got, err := db.Organization(ctx, o.ID)
	if err != nil || got.Handle != o.Handle || !got.CreatedAt.Equal(o.CreatedAt) {
		t.Fatalf("Organization = %+v, %v; want %+v", got, err, o)
	}
	ps, total, err := db.Projects(ctx, o.ID, Page{Limit: 10})
	if err != nil || total != 1 || len(ps) != 1 || ps[0].Name != DefaultProjectName {
		t.Fatalf("Projects = %v, %d, %v", ps, total, err)
	}
	dup := &Organization{ID: newID(), Handle: o.Handle, Name: "x", Region: "x"}
	if err := db.CreateOrganization(ctx, dup); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate handle: %v, want ErrConflict", err)
	}
	// The failed create left no default project behind for the second ID.
	if _, total, _ := db.Projects(ctx, dup.ID, Page{Limit: 10}); total != 0 {
		t.Fatalf("failed organization left %d projects", total)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	path := freshDSN(t)
	db, err := Open(context.Background(), testConfig(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 'x')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(context.Background(), testConfig(path)); err == nil {
		t.Fatal("Open accepted a database newer than the binary")
	}
	// Reopening a current database is fine and applies nothing twice.
	path2 := freshDSN(t)
	for range 2 {
		db, err := Open(context.Background(), testConfig(path2))
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

func TestConcurrentWritesNeverLocked(t *testing.T) {
	db := MustOpen(t)
	o := mustOrg(t, db)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &Project{OrganizationID: o.ID, Name: "p" + string(rune('a'+i%26)) + newID()[:6]}
			errs <- db.CreateProject(context.Background(), p)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent create: %v", err)
		}
	}
}

func TestProjectRules(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	o := mustOrg(t, db)
	other := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 10})
	def := ps[0]
	if err := db.DeleteProject(ctx, o.ID, def.ID); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete last project: %v, want ErrConflict", err)
	}
	if _, err := db.Project(ctx, other.ID, def.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other org reads project: %v, want ErrNotFound", err)
	}
	if err := db.DeleteProject(ctx, other.ID, def.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other org deletes project: %v, want ErrNotFound", err)
	}
	p := &Project{OrganizationID: o.ID, Name: "second"}
	if err := db.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	name := DefaultProjectName
	if _, err := db.UpdateProject(ctx, o.ID, p.ID, ProjectUpdate{Name: &name}); !errors.Is(err, ErrConflict) {
		t.Fatalf("rename onto taken name: %v, want ErrConflict", err)
	}
	if err := db.CreateProject(ctx, &Project{OrganizationID: newID(), Name: "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("project in unregistered org: %v, want ErrInvalid", err)
	}
	if err := db.DeleteProject(ctx, o.ID, p.ID); err != nil {
		t.Fatal(err)
	}
}
