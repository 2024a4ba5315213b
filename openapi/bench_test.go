package openapi

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

// largeDocument is an OpenAPI 3.0 document of n operations (250 paths ×
// GET and POST), each with parameters, a request body and answers whose
// schemas are inline and shared, padded to about size bytes.
func largeDocument(n, size int) []byte {
	var b strings.Builder
	b.WriteString("openapi: 3.0.3\ninfo:\n  title: Large API\n  version: 1.0.0\nservers:\n  - url: https://large.example.com/v1\npaths:\n")
	pad := max(0, size/n-900)
	for i := range n / 2 {
		fmt.Fprintf(&b, "  /resources%d/{id}/items:\n", i)
		for _, m := range []string{"get", "post"} {
			fmt.Fprintf(&b, `    %s:
      operationId: %s%d
      summary: Operation %d %s
      description: %s
      parameters:
        - {name: id, in: path, required: true, schema: {type: string, format: uuid}}
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000}}
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                name: {type: string, maxLength: 100}
                tags: {type: array, items: {type: string}}
                owner: {$ref: '#/components/schemas/Owner'}
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema: {type: array, items: {$ref: '#/components/schemas/Item'}}
        default:
          description: error
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Error'}
`, m, m, i, i, m, strings.Repeat("x", pad))
		}
	}
	b.WriteString(`components:
  schemas:
    Owner: {type: object, properties: {id: {type: string}, name: {type: string}}}
    Item: {type: object, properties: {id: {type: string}, owner: {$ref: '#/components/schemas/Owner'}, children: {type: array, items: {$ref: '#/components/schemas/Item'}}}}
    Error: {type: object, required: [code], properties: {code: {type: integer}, message: {type: string}}}
`)
	return []byte(b.String())
}

// BenchmarkImport1MB imports a 1 MB document of 500 operations.
//
//	go test -run '^$' -bench Import1MB -benchmem ./openapi/
func BenchmarkImport1MB(b *testing.B) {
	doc := largeDocument(500, 1<<20)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := Import(context.Background(), doc, Overrides{})
		if err != nil || len(res.API.Operations) != 500 {
			b.Fatal(err)
		}
	}
}

// TestImportPeakMemory reports the heap that one import of the 1 MB
// document holds at most, sampled with a GC after each phase is not
// possible from outside, so the whole process is measured instead:
//
//	go test -c -o /tmp/openapi.test ./openapi/ &&
//	OPENAPI_PEAK=base /usr/bin/time -f '%M KiB' /tmp/openapi.test -test.run PeakMemory &&
//	OPENAPI_PEAK=import /usr/bin/time -f '%M KiB' /tmp/openapi.test -test.run PeakMemory
//
// The difference of the two maximum resident sizes is what the import
// costs. Without OPENAPI_PEAK the test is skipped.
func TestImportPeakMemory(t *testing.T) {
	mode := os.Getenv("OPENAPI_PEAK")
	if mode == "" {
		t.Skip("set OPENAPI_PEAK=base or import (see the comment)")
	}
	doc := largeDocument(500, 1<<20)
	runtime.GC()
	if mode == "import" {
		res, err := Import(context.Background(), doc, Overrides{})
		if err != nil || len(res.API.Operations) != 500 {
			t.Fatal(err)
		}
		runtime.KeepAlive(res)
	}
	t.Logf("document: %d bytes", len(doc))
}
