package fleet

import (
	"os"
	"testing"

	"platform-api/store/pgtest"
)

// TestMain runs the tests on SQLite and, when PLATFORM_TEST_POSTGRES is
// set, again on PostgreSQL (the store under test comes from storetest).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
