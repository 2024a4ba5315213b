package document

import (
	"fmt"
	"regexp"

	"platform-api/store"
)

// The second generation's document (contract §6, kind RestApi). What of our
// model it cannot carry is left out, never invented (README, "Gateways"):
// only the first endpoint of the default backend service is the upstream;
// per-operation backends, weights, health checks, endpoint mTLS, timeouts,
// retries, load balancing, circuit breakers, and the API's mtls, OAuth 2
// security, cors and rate limiting have no RestApi field; API keys become
// the api-key-auth policy (policies.go). Request and response
// policies become the operation's one list of policies, request policies
// first; our policies carry no version, and the document names them v1.

type restAPI struct {
	APIVersion string       `yaml:"apiVersion"`
	Kind       string       `yaml:"kind"`
	Metadata   restMetadata `yaml:"metadata"`
	Spec       restSpec     `yaml:"spec"`
}

type restMetadata struct {
	Name string `yaml:"name"`
}

type restSpec struct {
	DisplayName string                  `yaml:"displayName"`
	Version     string                  `yaml:"version"`
	Context     string                  `yaml:"context"`
	Vhosts      map[string]string       `yaml:"vhosts,omitempty"`
	Upstream    map[string]restUpstream `yaml:"upstream"`
	Operations  []restOperation         `yaml:"operations"`
	Policies    []restPolicy            `yaml:"policies,omitempty"` // API level (policies.go)
}

type restUpstream struct {
	URL string `yaml:"url"`
}

type restOperation struct {
	Method   string       `yaml:"method"`
	Path     string       `yaml:"path"`
	Policies []restPolicy `yaml:"policies,omitempty"`
}

type restPolicy struct {
	Name    string `yaml:"name"`
	Version string `yaml:"version"`
	Params  any    `yaml:"params,omitempty"`
}

// Kind and apiVersion of contract §6.
const (
	restAPIKind    = "RestApi"
	restAPIVersion = "gateway.api-platform.wso2.com/v1"
	policyVersion  = "v1"
)

// displayNamePattern is what a RestApi displayName may hold.
var displayNamePattern = regexp.MustCompile(`^[A-Za-z0-9 ._-]{1,100}$`)

// DisplayName is the RestApi displayName of an API: its display name when
// a RestApi can hold it, else its name (whose characters always can).
func DisplayName(a *store.API) string {
	if displayNamePattern.MatchString(a.DisplayName) {
		return a.DisplayName
	}
	return a.Name
}

// Upstream is the one upstream URL a RestApi carries: the first endpoint of
// the default backend service, or of the first one with an endpoint.
func Upstream(a *store.API) (string, bool) {
	for _, b := range a.BackendServices {
		if b.IsDefault && len(b.Endpoints) > 0 {
			return b.Endpoints[0].URL, true
		}
	}
	for _, b := range a.BackendServices {
		if len(b.Endpoints) > 0 {
			return b.Endpoints[0].URL, true
		}
	}
	return "", false
}

// RenderRestAPI renders an API into the second generation's YAML document
// for a deployment to vhost (empty: the gateway's default). The output is
// deterministic. A document over MaxBytes is ErrTooLarge.
func RenderRestAPI(a *store.API, vhost string) ([]byte, error) {
	url, ok := Upstream(a)
	if !ok {
		return nil, fmt.Errorf("API %s has no backend endpoint to be its upstream", a.ID)
	}
	d := restAPI{APIVersion: restAPIVersion, Kind: restAPIKind, Metadata: restMetadata{Name: a.Handle},
		Spec: restSpec{
			DisplayName: DisplayName(a),
			Version:     a.Version,
			Context:     a.Context,
			Upstream:    map[string]restUpstream{"main": {URL: url}},
			Operations:  []restOperation{},
		}}
	if vhost != "" {
		d.Spec.Vhosts = map[string]string{"main": vhost}
	}
	for i, op := range a.Operations {
		r := op.Request
		if r == nil {
			continue
		}
		o := restOperation{Method: r.Method, Path: r.Path}
		for _, list := range [][]store.Policy{r.RequestPolicies, r.ResponsePolicies} {
			ps, err := documentPolicies(list)
			if err != nil {
				return nil, fmt.Errorf("operations[%d].request: %w", i, err)
			}
			for _, p := range ps {
				o.Policies = append(o.Policies, restPolicy{Name: p.Name, Version: policyVersion, Params: p.Params})
			}
		}
		d.Spec.Operations = append(d.Spec.Operations, o)
	}
	ps, err := documentAPIPolicies(a)
	if err != nil {
		return nil, err
	}
	d.Spec.Policies = ps
	return encodeYAML(d)
}
