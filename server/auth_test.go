package server

import (
	"encoding/json"
	"net/http"
	"platform-api/httpx"
	"strings"
	"testing"
)

func TestHTTPAuthErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ name, header, want string }{
		{"NoHeader", "", "missing bearer token"},
		{"NotBearer", "Basic abc", "missing bearer token"},
		{"BadToken", "Bearer x.y.z", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/projects", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b httpx.ErrorBody
			json.NewDecoder(resp.Body).Decode(&b)
			if resp.StatusCode != 401 || b.Code != 401 || !strings.Contains(b.Description, tc.want) {
				t.Fatalf("got %d %+v", resp.StatusCode, b)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("no WWW-Authenticate header")
			}
		})
	}
}
