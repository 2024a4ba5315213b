package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestCacheSeesPostgresSwitch: the PostgreSQL switch was read only after
// the tests ran, where the test cache does not see it, so a run asking for
// PostgreSQL replayed a result cached from a SQLite-only run and the
// PostgreSQL pass never ran. It runs go test on a small package twice: the
// second run, with the switch, must run the PostgreSQL pass.
func TestCacheSeesPostgresSwitch(t *testing.T) {
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	run := func(extra ...string) string {
		t.Helper()
		cmd := exec.Command(gocmd, "test", "-v", "./testdata/cachecheck")
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); k != URLEnv && k != StoreEnv && k != "GOFLAGS" {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, extra...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go test: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := run(); !strings.Contains(out, "pgtest: ran on SQLite only") {
		t.Fatalf("a run without %s does not say it ran on SQLite only:\n%s", URLEnv, out)
	}
	// Nothing answers there: the sweep fails quietly, and the tests of the
	// package never connect. A value of its own each time, so that this
	// test's earlier runs cannot have cached the answer.
	out := run(fmt.Sprintf("%s=postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1&application_name=run%d",
		URLEnv, time.Now().UnixNano()))
	if strings.Contains(out, "(cached)") || !strings.Contains(out, "pgtest: ran on PostgreSQL") {
		t.Fatalf("a run with %s did not run the PostgreSQL pass:\n%s", URLEnv, out)
	}
}
