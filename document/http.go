package document

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"platform-api/store"
)

// The first generation's document (contract §4, kind http/rest). Structs,
// not maps, fix the key order to the contract's; yaml.v3 does the quoting,
// so names holding ':', '#', quotes, newlines or any Unicode come back
// exactly as written (TestDocumentQuoting proves it).

type document struct {
	Kind    string       `yaml:"kind"`
	Version string       `yaml:"version"`
	Data    documentData `yaml:"data"`
}

type documentData struct {
	ID          string              `yaml:"id"`
	Name        string              `yaml:"name"`
	DisplayName string              `yaml:"displayName,omitempty"`
	Version     string              `yaml:"version"`
	Description string              `yaml:"description,omitempty"`
	Context     string              `yaml:"context"`
	Provider    string              `yaml:"provider,omitempty"`
	Upstream    []documentUpstream  `yaml:"upstream"`
	Operations  []documentOperation `yaml:"operations"`
}

type documentUpstream struct {
	URL         string             `yaml:"url"`
	Weight      *int               `yaml:"weight,omitempty"`
	Description string             `yaml:"description,omitempty"`
	HealthCheck *store.HealthCheck `yaml:"healthCheck,omitempty"`
	MTLS        *store.MTLS        `yaml:"mtls,omitempty"`
}

type documentOperation struct {
	Method           string                `yaml:"method"`
	Path             string                `yaml:"path"`
	BackendServices  []store.BackendRef    `yaml:"backend-services,omitempty"`
	Authentication   *store.Authentication `yaml:"authentication,omitempty"`
	RequestPolicies  []documentPolicy      `yaml:"requestPolicies,omitempty"`
	ResponsePolicies []documentPolicy      `yaml:"responsePolicies,omitempty"`
}

type documentPolicy struct {
	Name   string `yaml:"name"`
	Params any    `yaml:"params,omitempty"`
}

// Document kinds and version of contract §4.
const (
	documentKind    = "http/rest"
	documentVersion = "api-platform.wso2.com/v1"
)

// RenderHTTPRest renders an API into the first generation's YAML document.
// The output is deterministic: the same API gives the same bytes. A
// document over MaxBytes is ErrTooLarge.
func RenderHTTPRest(a *store.API) ([]byte, error) {
	d := document{Kind: documentKind, Version: documentVersion, Data: documentData{
		ID:          a.ID,
		Name:        a.Name,
		DisplayName: a.DisplayName,
		Version:     a.Version,
		Description: a.Description,
		Context:     a.Context,
		Provider:    a.Provider,
		Upstream:    []documentUpstream{},
		Operations:  []documentOperation{},
	}}
	for _, b := range a.BackendServices {
		for _, ep := range b.Endpoints {
			d.Data.Upstream = append(d.Data.Upstream, documentUpstream{
				URL: ep.URL, Weight: ep.Weight, Description: ep.Description, HealthCheck: ep.HealthCheck, MTLS: ep.MTLS,
			})
		}
	}
	for i, op := range a.Operations {
		r := op.Request
		if r == nil {
			continue
		}
		o := documentOperation{Method: r.Method, Path: r.Path, BackendServices: r.BackendServices, Authentication: r.Authentication}
		var err error
		if o.RequestPolicies, err = documentPolicies(r.RequestPolicies); err != nil {
			return nil, fmt.Errorf("operations[%d].request.requestPolicies: %w", i, err)
		}
		if o.ResponsePolicies, err = documentPolicies(r.ResponsePolicies); err != nil {
			return nil, fmt.Errorf("operations[%d].request.responsePolicies: %w", i, err)
		}
		d.Data.Operations = append(d.Data.Operations, o)
	}
	return encodeYAML(d)
}

func documentPolicies(ps []store.Policy) ([]documentPolicy, error) {
	var out []documentPolicy
	for _, p := range ps {
		dp := documentPolicy{Name: p.Name}
		if len(p.Params) > 0 {
			dec := json.NewDecoder(bytes.NewReader(p.Params))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				return nil, err
			}
			dp.Params = yamlNumbers(v)
		}
		out = append(out, dp)
	}
	return out, nil
}

// yamlNumbers turns json.Number (kept to avoid float rounding of large
// integers) into int64 or float64, which yaml emits as numbers, not strings.
func yamlNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = yamlNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = yamlNumbers(e)
		}
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}
