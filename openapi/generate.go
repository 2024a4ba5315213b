package openapi

import (
	"regexp"
	"strings"

	"platform-api/store"
)

// The document made for an API that was not imported: OpenAPI 3.1, one
// operation per operation of ours, the context as its (relative) server,
// since clients call the API on a gateway's host under the context.

type genDoc struct {
	OpenAPI    string                       `yaml:"openapi" json:"openapi"`
	Info       genInfo                      `yaml:"info" json:"info"`
	Servers    []genServer                  `yaml:"servers" json:"servers"`
	Paths      map[string]map[string]*genOp `yaml:"paths" json:"paths"`
	Components *genComponents               `yaml:"components,omitempty" json:"components,omitempty"`
	Security   []map[string][]string        `yaml:"security,omitempty" json:"security,omitempty"`
}

type genInfo struct {
	Title       string `yaml:"title" json:"title"`
	Version     string `yaml:"version" json:"version"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
}

type genServer struct {
	URL string `yaml:"url" json:"url"`
}

type genOp struct {
	OperationID string                 `yaml:"operationId,omitempty" json:"operationId,omitempty"`
	Summary     string                 `yaml:"summary,omitempty" json:"summary,omitempty"`
	Parameters  []genParam             `yaml:"parameters,omitempty" json:"parameters,omitempty"`
	Responses   map[string]genResponse `yaml:"responses" json:"responses"`
}

type genParam struct {
	Name     string            `yaml:"name" json:"name"`
	In       string            `yaml:"in" json:"in"`
	Required bool              `yaml:"required" json:"required"`
	Schema   map[string]string `yaml:"schema" json:"schema"`
}

type genResponse struct {
	Description string `yaml:"description" json:"description"`
}

type genComponents struct {
	SecuritySchemes map[string]genScheme `yaml:"securitySchemes" json:"securitySchemes"`
}

type genScheme struct {
	Type string `yaml:"type" json:"type"`
	In   string `yaml:"in" json:"in"`
	Name string `yaml:"name" json:"name"`
}

var pathParam = regexp.MustCompile(`\{([^{}]+)\}`)

// Generate makes an OpenAPI 3.1 document of a (marshal it with
// encoding/json or YAML).
func Generate(a *store.API) any {
	d := &genDoc{
		OpenAPI: "3.1.0",
		Info:    genInfo{Title: a.Name, Version: a.Version, Description: a.Description},
		Servers: []genServer{{URL: a.Context}},
		Paths:   map[string]map[string]*genOp{},
	}
	if d.Info.Title == "" {
		d.Info.Title = a.DisplayName
	}
	seen := map[string]bool{}
	for _, op := range a.Operations {
		r := op.Request
		if r == nil {
			continue
		}
		item := d.Paths[r.Path]
		if item == nil {
			item = map[string]*genOp{}
			d.Paths[r.Path] = item
		}
		o := &genOp{Summary: op.Description,
			Responses: map[string]genResponse{"default": {Description: "what the backend answers"}}}
		if id := op.Name; id != "" && !seen[id] && !strings.ContainsAny(id, " \t\n") {
			o.OperationID, seen[id] = id, true
		}
		for _, m := range pathParam.FindAllStringSubmatch(r.Path, -1) {
			o.Parameters = append(o.Parameters, genParam{Name: m[1], In: "path", Required: true, Schema: map[string]string{"type": "string"}})
		}
		item[strings.ToLower(r.Method)] = o
	}
	if s := a.Security; s != nil && s.Enabled && s.APIKey != nil && s.APIKey.Enabled {
		scheme := genScheme{Type: "apiKey", In: "header", Name: s.APIKey.Header}
		if scheme.Name == "" && s.APIKey.Query != "" {
			scheme.In, scheme.Name = "query", s.APIKey.Query
		}
		if scheme.Name != "" {
			d.Components = &genComponents{SecuritySchemes: map[string]genScheme{"apiKey": scheme}}
			d.Security = []map[string][]string{{"apiKey": {}}}
		}
	}
	return d
}
