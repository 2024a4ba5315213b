package openapi

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Bounds of what one document may be, checked on the YAML node tree before
// the OpenAPI library sees the document, so that a hostile document costs
// one parse and one walk, both linear in its size.
const (
	// MaxDepth is how deeply mappings and sequences may nest. Real
	// documents (inline schemas of large public APIs) stay under 30.
	MaxDepth = 64
	// maxAliasGrowth: YAML aliases may add at most as many nodes as the
	// document holds (alias bombs multiply it by millions).
	maxAliasGrowth = 1
	// minAliasBudget lets a small document use a few anchors freely.
	minAliasBudget = 10_000
	// MaxRefs is how many $ref a document may hold.
	MaxRefs = 100_000
)

// scan is what the walk of the node tree found.
type scan struct {
	version string // the value of swagger or openapi
	swagger bool
}

// scanner walks the node tree once, with memoised alias sizes.
type scanner struct {
	probs   *Problems
	nodes   int
	budget  int // alias expansion left
	sizes   map[*yaml.Node]aliasSize
	refs    int
	path    []string // JSON pointer tokens of the node being walked
	tooDeep bool
}

type aliasSize struct{ nodes, depth int }

// prescan parses data as YAML (JSON is YAML) into nodes and refuses what
// the library must not be given: not UTF-8, nesting deeper than MaxDepth,
// aliases that expand beyond the budget, and $refs outside the document.
func prescan(data []byte) (*scan, *Problems) {
	probs := &Problems{}
	if !utf8.Valid(data) {
		probs.Add("", 0, "the document must be UTF-8 text")
		return nil, probs
	}
	if strings.IndexByte(string(data), 0) >= 0 {
		probs.Add("", 0, "the document must not contain NUL bytes")
		return nil, probs
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		probs.Add("", 0, "is neither valid YAML nor JSON: %s", shorten(err.Error(), 300))
		return nil, probs
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = *root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		probs.Add("", root.Line, "the document must be a YAML or JSON object with an openapi or swagger field")
		return nil, probs
	}
	s := &scanner{probs: probs, sizes: map[*yaml.Node]aliasSize{}}
	s.walk(&root, 1)
	if probs.Len() > 0 {
		return nil, probs
	}
	// Aliases are checked after the walk: their budget is a share of the
	// document's own size.
	s.budget = max(minAliasBudget, maxAliasGrowth*s.nodes)
	if !s.checkAliases(&root, 1) {
		return nil, probs
	}
	out := &scan{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "swagger":
			out.version, out.swagger = v.Value, true
		case "openapi":
			if out.version == "" {
				out.version = v.Value
			}
		}
	}
	switch {
	case out.version == "":
		probs.Add("", root.Line, "has no openapi field (OpenAPI 3) or swagger field (Swagger 2.0): this is not an OpenAPI document")
	case out.swagger && out.version != "2.0":
		probs.Add("/swagger", 0, "must be \"2.0\", not %q", out.version)
	case !out.swagger && !strings.HasPrefix(out.version, "3."):
		probs.Add("/openapi", 0, "must be a 3.x version (3.0.x, 3.1.x), not %q", out.version)
	}
	if probs.Len() > 0 {
		return nil, probs
	}
	return out, nil
}

// walk counts nodes, checks depth and $refs; aliases are not followed here.
func (s *scanner) walk(n *yaml.Node, depth int) {
	s.nodes++
	if depth > MaxDepth {
		if !s.tooDeep {
			s.tooDeep = true
			s.probs.Add(s.pointer(), n.Line, "nests deeper than %d levels", MaxDepth)
		}
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			s.path = append(s.path, k.Value)
			if k.Value == "$ref" && v.Kind == yaml.ScalarNode {
				s.checkRef(v)
			}
			s.walk(v, depth+1)
			s.path = s.path[:len(s.path)-1]
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			s.path = append(s.path, strconv.Itoa(i))
			s.walk(c, depth+1)
			s.path = s.path[:len(s.path)-1]
		}
	}
}

func (s *scanner) checkRef(v *yaml.Node) {
	s.refs++
	if s.refs == MaxRefs+1 {
		s.probs.Add(s.pointer(), v.Line, "the document holds more than %d $ref", MaxRefs)
	}
	if !strings.HasPrefix(v.Value, "#") {
		s.probs.Add(s.pointer(), v.Line, "$ref %q points outside the document: this server never fetches files or URLs; bundle the document into one file (for example with redocly bundle) and import that", shorten(v.Value, 200))
	}
}

// checkAliases adds up what every alias expands to (each anchor's size
// computed once) and refuses the document once the total passes the budget
// or an alias nests deeper than MaxDepth.
func (s *scanner) checkAliases(n *yaml.Node, depth int) bool {
	if n.Kind == yaml.AliasNode {
		sz := s.size(n.Alias, 0)
		s.budget -= sz.nodes
		if s.budget < 0 || sz.nodes < 0 {
			s.probs.Add("", n.Line, "YAML aliases expand the document beyond twice its size (an alias bomb?); write the repeated parts out or use $ref")
			return false
		}
		if depth+sz.depth > MaxDepth {
			s.probs.Add("", n.Line, "a YAML alias nests deeper than %d levels", MaxDepth)
			return false
		}
		return true
	}
	for _, c := range n.Content {
		if !s.checkAliases(c, depth+1) {
			return false
		}
	}
	return true
}

// size is the number of nodes n stands for with its aliases expanded, and
// its depth; -1 nodes means more than the budget (or a cycle).
func (s *scanner) size(n *yaml.Node, guard int) aliasSize {
	if sz, ok := s.sizes[n]; ok {
		return sz
	}
	if guard > MaxDepth*2 {
		return aliasSize{nodes: -1}
	}
	s.sizes[n] = aliasSize{nodes: -1} // a cycle reads as too large
	out := aliasSize{nodes: 1}
	target := n
	if n.Kind == yaml.AliasNode {
		target, out.nodes = n.Alias, 0
	}
	if target != n {
		out = s.size(target, guard+1)
	} else {
		for _, c := range n.Content {
			sz := s.size(c, guard+1)
			if sz.nodes < 0 || out.nodes+sz.nodes > s.budget+s.nodes {
				out = aliasSize{nodes: -1}
				break
			}
			out.nodes += sz.nodes
			out.depth = max(out.depth, sz.depth+1)
		}
	}
	s.sizes[n] = out
	return out
}

func (s *scanner) pointer() string { return Pointer(s.path...) }

// Pointer is the JSON pointer (RFC 6901) of the given tokens.
func Pointer(tokens ...string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Problems is a bounded list of what is wrong with a document, each with
// its location: a JSON pointer and, where known, a line.
type Problems struct {
	list []string
	more int
}

// MaxProblems is how many problems one answer lists.
const MaxProblems = 20

// Add records a problem at pointer (and line, when not 0).
func (p *Problems) Add(pointer string, line int, format string, a ...any) {
	if len(p.list) >= MaxProblems {
		p.more++
		return
	}
	loc := "#" + pointer
	if line > 0 {
		loc += fmt.Sprintf(" (line %d)", line)
	}
	p.list = append(p.list, loc+": "+fmt.Sprintf(format, a...))
}

// Len is the number of problems recorded.
func (p *Problems) Len() int { return len(p.list) + p.more }

// List is the recorded problems, each "location: problem".
func (p *Problems) List() []string { return p.list }

func (p *Problems) String() string {
	msg := strings.Join(p.list, "; ")
	if p.more > 0 {
		msg += fmt.Sprintf("; and %d more", p.more)
	}
	return msg
}
