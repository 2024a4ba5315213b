// Package cachecheck is a package whose tests use pgtest as every
// store-backed suite does, for TestCacheSeesPostgresSwitch to run.
package cachecheck

import (
	"os"
	"testing"

	"platform-api/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStore(t *testing.T) {
	t.Logf("on PostgreSQL: %v", pgtest.Postgres())
}
