package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The load generator (platform-api load) measures the REST API from its own
// process: concurrent clients, each with one request in flight, play one
// kind of request for a warm-up and then a measured time, over the same
// shared HTTP/2 client as the simulator.

// LoadOptions configure a load run.
type LoadOptions struct {
	Target   string // base URL, https://host:port
	Insecure bool   // skip certificate verification
	Token    string // bearer JWT of the organization to work in
	// Scenario is what is measured: "create" (APIs of 10 operations and 2
	// backends), "list" (a page of 100 full APIs), "get" (one API by id),
	// "all": create, list at offset 0, list of the last page, get (the
	// APIs of create are deleted before the list phases, unless Keep), or
	// "keys" (loadkeys.go): a page of keys, a gateway's key pull, key
	// creates, in a project of APIs with KeysPerAPI keys each.
	Scenario string
	Clients  int           // concurrent clients (default 8)
	Duration time.Duration // measured time of each phase (default 10s)
	Warmup   time.Duration // time before each phase's measurement, not counted (0: none; the command's default is 2s)
	// APIs is how many APIs the project read by list and get holds (default
	// 1000); the missing ones are created before the measurement.
	APIs int
	// Offset is the page offset of the list scenario (default 0).
	Offset int
	// KeysPerAPI is how many keys the keys scenario creates on each API
	// before measuring (default 10).
	KeysPerAPI int
	// Project is the id of an existing project for list and get; empty for
	// a new one. The create phase of "all" writes to a project of its own,
	// so the list figures see exactly the APIs asked for; the create
	// scenario alone writes to Project when set (creates into a full
	// project).
	Project string
	Keep    bool // keep what the run created
	// Progress receives a progress line now and then; nil for none.
	Progress io.Writer
}

// LoadReport is what a load run measured.
type LoadReport struct {
	Target      string  `json:"target"`
	Protocol    string  `json:"protocol"` // of the answers, HTTP/2.0 unless the server refused it
	Scenario    string  `json:"scenario"`
	Clients     int     `json:"clients"`
	WarmupSec   float64 `json:"warmupSeconds"`
	DurationSec float64 `json:"durationSeconds"`
	// The project read by list and get, the APIs it held, and how many of
	// them the run created (in FillSec) to reach -apis.
	Project string  `json:"projectId,omitempty"`
	APIs    int     `json:"apis,omitempty"`
	Filled  int     `json:"filled,omitempty"`
	FillSec float64 `json:"fillSeconds,omitempty"`
	// The keys scenario: keys created on the APIs (in KeysFillSec), and the
	// gateway every API was deployed to (in DeploySec).
	Keys        int         `json:"keys,omitempty"`
	KeysFillSec float64     `json:"keysFillSeconds,omitempty"`
	Gateway     string      `json:"gatewayId,omitempty"`
	DeploySec   float64     `json:"deploySeconds,omitempty"`
	Phases      []LoadPhase `json:"phases"`
	// What the run created (in every phase and the set-up), and what it
	// deleted at the end (nothing with -keep).
	CreatedAPIs     int      `json:"createdApis"`
	CreatedProjects []string `json:"createdProjects"`
	Kept            bool     `json:"kept"`
	DeletedAPIs     int      `json:"deletedApis"`
	DeletedProjects int      `json:"deletedProjects"`
	CreatedGateways int      `json:"createdGateways,omitempty"`
	DeletedGateways int      `json:"deletedGateways,omitempty"`
	CleanupSec      float64  `json:"cleanupSeconds"`
	// Errors are failures outside the measured requests: set-up, the check
	// of each list page, clean-up.
	Errors []string `json:"errors"`
}

// LoadPhase is one measured kind of request.
type LoadPhase struct {
	Name    string `json:"name"` // create, list, get, key-page, key-pull or key-create
	Project string `json:"projectId"`
	APIs    int    `json:"apis,omitempty"` // list, get and key phases: APIs in the project
	Offset  int    `json:"offset"`         // list: the page's offset
	// Keys: in the project (key-page, key-create), or pulled (key-pull).
	Keys int `json:"keys,omitempty"`
	// Requests answered as expected (201 for create, 200 otherwise) within
	// the measured time, and their rate.
	Requests int     `json:"requests"`
	PerSec   float64 `json:"perSecond"`
	// Latency of those requests (request made -> answer read), in ms.
	P50 float64 `json:"p50Ms"`
	P90 float64 `json:"p90Ms"`
	P99 float64 `json:"p99Ms"`
	Max float64 `json:"maxMs"`
	// ResponseBytes is the mean size of an answer's body.
	ResponseBytes int64 `json:"responseBytes"`
	// Errors counts the requests of the whole phase, warm-up included, that
	// failed or were answered otherwise; FirstErrors says what the first
	// few were.
	Errors      int      `json:"errors"`
	FirstErrors []string `json:"firstErrors"`
}

const (
	// fillClients create the missing APIs of the list project and
	// cleanupClients delete what a run created: enough to keep a 2-core
	// server busy, few enough not to queue for long on SQLite's one writer.
	fillClients    = 8
	cleanupClients = 8
	// listLimit is the page size of the list phases.
	listLimit = 100
	// firstErrors is how many error messages a phase keeps.
	firstErrors = 5
)

// loader is one load run.
type loader struct {
	*client
	opt    LoadOptions
	suffix string       // makes this run's names unique
	seq    atomic.Int64 // numbers the APIs this run creates
	auth   []string     // the Authorization header's value, shared read-only
	proto  atomic.Value // string: the protocol of the first answer

	mu       sync.Mutex
	created  []string // APIs created, deleted at the end unless Keep
	projects []string // projects created, deleted after their APIs
	gateways []string // gateways registered (keys), deleted after the APIs
	// cleaned, cleanedProjects and cleanedGateways count the leading APIs,
	// projects and gateways already deleted (or being deleted) by a
	// clean-up.
	cleaned, cleanedProjects, cleanedGateways int
	errors                                    []string
}

// Load runs a load scenario and returns the report. An error means the run
// could not be set up; what was created before is still deleted.
func Load(ctx context.Context, opt LoadOptions) (*LoadReport, error) {
	if opt.Clients == 0 {
		opt.Clients = 8
	}
	if opt.Duration == 0 {
		opt.Duration = 10 * time.Second
	}
	if opt.APIs == 0 {
		opt.APIs = 1000
	}
	if opt.KeysPerAPI == 0 {
		opt.KeysPerAPI = keysDefaultPerAPI
	}
	switch {
	case !slices.Contains([]string{"create", "list", "get", "all", "keys"}, opt.Scenario):
		return nil, fmt.Errorf("-scenario must be create, list, get, all or keys, not %q", opt.Scenario)
	case opt.KeysPerAPI < 1 || opt.KeysPerAPI > 100_000:
		return nil, errors.New("-keys-per-api must be from 1 to 100000")
	case opt.Clients < 1 || opt.Clients > 1000:
		return nil, errors.New("-clients must be from 1 to 1000")
	case opt.Duration < 0 || opt.Warmup < 0:
		return nil, errors.New("-duration and -warmup must not be negative")
	case opt.APIs < 1 || opt.APIs > 1_000_000:
		return nil, errors.New("-apis must be from 1 to 1000000")
	case opt.Offset < 0:
		return nil, errors.New("-offset must not be negative")
	}
	c, err := newClient(opt.Target, opt.Token, opt.Insecure, time.Minute)
	if err != nil {
		return nil, err
	}
	l := &loader{client: c, opt: opt, suffix: randomSuffix(), auth: []string{"Bearer " + c.token}}
	rep := &LoadReport{Target: c.target, Scenario: opt.Scenario, Clients: opt.Clients,
		WarmupSec: opt.Warmup.Seconds(), DurationSec: opt.Duration.Seconds(), Phases: []LoadPhase{}}
	err = l.run(ctx, rep)
	rep.CreatedAPIs, rep.CreatedProjects, rep.Kept = len(l.created), append([]string{}, l.projects...), opt.Keep
	rep.CreatedGateways = len(l.gateways)
	if !opt.Keep {
		l.cleanup(rep)
	}
	l.progress("")
	rep.Protocol, _ = l.proto.Load().(string)
	rep.Errors = append([]string{}, l.errors...)
	if err != nil {
		return nil, err
	}
	return rep, nil
}

func (l *loader) fail(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errors) < 50 {
		l.errors = append(l.errors, fmt.Sprintf(format, a...))
	}
}

func (l *loader) progress(format string, a ...any) {
	if l.opt.Progress != nil {
		fmt.Fprintf(l.opt.Progress, "\r%-70s\r", fmt.Sprintf(format, a...))
	}
}

// run sets up and measures the phases of the scenario.
func (l *loader) run(ctx context.Context, rep *LoadReport) error {
	if err := l.ensureOrganization(ctx, "load-"+l.suffix, "Load generator"); err != nil {
		return err
	}
	sc := l.opt.Scenario
	if sc == "keys" {
		return l.runKeys(ctx, rep)
	}
	if sc == "create" || sc == "all" {
		project := l.opt.Project
		if project == "" || sc == "all" {
			var err error
			if project, err = l.newProject(ctx, "load-"+l.suffix+"-create"); err != nil {
				return err
			}
		}
		ph := LoadPhase{Name: "create", Project: project}
		l.measure(ctx, &ph, http.StatusCreated, l.createRequests(project), true)
		rep.Phases = append(rep.Phases, ph)
		// The APIs just created are in the organization the list phases
		// read, and an organization's size changes a page's cost (counting
		// a project's APIs may walk the whole organization's): delete them
		// first, so every phase of all measures what it measures alone.
		if sc == "all" && !l.opt.Keep {
			l.cleanup(rep)
		}
	}
	if sc == "create" {
		return nil
	}
	project, total, err := l.prepare(ctx, rep)
	if err != nil {
		return err
	}
	var offsets []int
	switch sc {
	case "list":
		offsets = []int{l.opt.Offset}
	case "all":
		offsets = []int{0, max(0, total-listLimit)}
	}
	for _, off := range offsets {
		if ctx.Err() != nil {
			return nil
		}
		path := fmt.Sprintf("/api/v1/apis?projectId=%s&limit=%d&offset=%d", project, listLimit, off)
		var page struct{ Count int }
		if err := l.call(ctx, "GET", path, nil, &page, 200); err != nil {
			return err
		}
		if want := min(listLimit, max(0, total-off)); page.Count != want {
			l.fail("list at offset %d: the page held %d APIs, want %d", off, page.Count, want)
		}
		ph := LoadPhase{Name: "list", Project: project, APIs: total, Offset: off}
		l.measure(ctx, &ph, http.StatusOK, l.getRequests(path), false)
		rep.Phases = append(rep.Phases, ph)
	}
	if (sc == "get" || sc == "all") && ctx.Err() == nil {
		var page struct{ List []struct{ ID string } }
		if err := l.call(ctx, "GET", "/api/v1/apis?limit=1&projectId="+project, nil, &page, 200); err != nil {
			return err
		}
		if len(page.List) == 0 {
			return errors.New("the project holds no API to get")
		}
		ph := LoadPhase{Name: "get", Project: project, APIs: total}
		l.measure(ctx, &ph, http.StatusOK, l.getRequests("/api/v1/apis/"+page.List[0].ID), false)
		rep.Phases = append(rep.Phases, ph)
	}
	return nil
}

// newProject creates a project for the run.
func (l *loader) newProject(ctx context.Context, name string) (string, error) {
	var p struct{ ID string }
	if err := l.call(ctx, "POST", "/api/v1/projects", map[string]string{"name": name,
		"description": "created by platform-api load"}, &p, 201); err != nil {
		return "", fmt.Errorf("create project: %w", err)
	}
	l.mu.Lock()
	l.projects = append(l.projects, p.ID)
	l.mu.Unlock()
	return p.ID, nil
}

// prepare makes sure the project of list and get (-project, or a new one)
// holds at least -apis APIs, creating the missing ones concurrently, and
// returns it with the number it holds.
func (l *loader) prepare(ctx context.Context, rep *LoadReport) (string, int, error) {
	project := l.opt.Project
	if project == "" {
		var err error
		if project, err = l.newProject(ctx, "load-"+l.suffix); err != nil {
			return "", 0, err
		}
	}
	total, err := l.countAPIs(ctx, project)
	if err != nil {
		return "", 0, err
	}
	if missing := l.opt.APIs - total; missing > 0 {
		start := time.Now()
		newReq := l.createRequests(project)
		err := l.parallel(ctx, missing, "creating APIs in the list project", func(int) error {
			req, err := newReq(ctx)
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			if _, err := l.do(req, http.StatusCreated, &buf, true); err != nil {
				return err
			}
			return l.keepCreated(buf.Bytes())
		})
		if err != nil {
			return "", 0, err
		}
		rep.Filled, rep.FillSec = missing, time.Since(start).Seconds()
		if total, err = l.countAPIs(ctx, project); err != nil {
			return "", 0, err
		}
	}
	rep.Project, rep.APIs = project, total
	return project, total, nil
}

// parallel runs fn for 0..n-1 on fillClients goroutines, reporting
// progress; it fails when any call did, with the first error.
func (l *loader) parallel(ctx context.Context, n int, what string, fn func(i int) error) error {
	var next, done, failed atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(fillClients, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					failed.Add(1)
					once.Do(func() { first = err })
					continue
				}
				if k := done.Add(1); k%100 == 0 {
					l.progress("%s %d/%d", what, k, n)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if k := failed.Load(); k > 0 {
		return fmt.Errorf("%s: %d of %d failed; first error: %w", what, k, n, first)
	}
	return nil
}

// countAPIs returns how many APIs the project holds.
func (l *loader) countAPIs(ctx context.Context, project string) (int, error) {
	var page struct{ Pagination struct{ Total int } }
	err := l.call(ctx, "GET", "/api/v1/apis?limit=1&projectId="+project, nil, &page, 200)
	return page.Pagination.Total, err
}

// createRequests returns a maker of create requests for the project: each
// body is the shape of the API benchmarks' (api/bench_test.go
// benchAPIBody: 10 operations, 2 backend services) with a name and context
// of its own, spliced into a body marshalled once, so that making a
// request costs the client one small copy.
func (l *loader) createRequests(project string) func(context.Context) (*http.Request, error) {
	const mark = "LOAD_NAME_MARK"
	ops := make([]any, 10)
	for i := range ops {
		ops[i] = map[string]any{"name": fmt.Sprintf("op%d", i), "request": map[string]any{
			"method": "GET", "path": fmt.Sprintf("/items%d/{id}", i),
			"backend-services": []any{map[string]any{"name": "primary", "weight": 90}, map[string]any{"name": "fallback", "weight": 10}},
			"requestPolicies":  []any{map[string]any{"name": "set-header", "params": map[string]any{"name": "X-Op", "value": i}}},
		}}
	}
	tmpl, _ := json.Marshal(map[string]any{
		"name": mark, "context": "/" + mark, "version": "v1", "projectId": project,
		"backend-services": []any{
			map[string]any{"name": "primary", "endpoints": []any{map[string]any{"url": "https://primary.internal:8443", "weight": 100}},
				"timeout": map[string]any{"connect": 1000, "read": 5000}},
			map[string]any{"name": "fallback", "endpoints": []any{map[string]any{"url": "https://fallback.internal"}}},
		},
		"operations": ops,
	})
	parts := bytes.Split(tmpl, []byte(mark))
	url := l.target + "/api/v1/apis"
	prefix := "load-" + l.suffix + "-"
	return func(ctx context.Context) (*http.Request, error) {
		n := l.seq.Add(1)
		body := make([]byte, 0, len(tmpl)+32)
		for i, part := range parts {
			if i > 0 {
				body = strconv.AppendInt(append(body, prefix...), n, 10)
			}
			body = append(body, part...)
		}
		req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = http.Header{"Authorization": l.auth, "Content-Type": jsonType}
		return req, nil
	}
}

// jsonType is the Content-Type header's value, shared read-only.
var jsonType = []string{"application/json"}

// getRequests returns a maker of GET requests for path.
func (l *loader) getRequests(path string) func(context.Context) (*http.Request, error) {
	url := l.target + path
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return nil, err
		}
		req.Header = http.Header{"Authorization": l.auth}
		return req, nil
	}
}

// do sends req and reads the whole answer: into buf when keep is set or
// the status is not want (for the error message), else into nothing. It
// returns the size of the body.
func (l *loader) do(req *http.Request, want int, buf *bytes.Buffer, keep bool) (int64, error) {
	resp, err := l.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if l.proto.Load() == nil {
		l.proto.CompareAndSwap(nil, resp.Proto)
	}
	var n int64
	if keep || resp.StatusCode != want {
		buf.Reset()
		n, err = buf.ReadFrom(resp.Body)
	} else {
		n, err = io.Copy(io.Discard, resp.Body)
	}
	switch {
	case err != nil:
		return n, fmt.Errorf("reading the answer: %w", err)
	case resp.StatusCode != want:
		msg := bytes.TrimSpace(buf.Bytes())
		if len(msg) > 300 {
			msg = append(msg[:300:300], "..."...)
		}
		return n, fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return n, nil
}

// keepCreated records the API whose create answer is body, for the
// clean-up. The answer is the API with its id first; the JSON is decoded
// only when it is not.
func (l *loader) keepCreated(body []byte) error {
	const prefix = `{"id":"`
	var id string
	if len(body) >= len(prefix)+36 && string(body[:len(prefix)]) == prefix && body[len(prefix)+36] == '"' {
		id = string(body[len(prefix) : len(prefix)+36])
	} else {
		var a struct{ ID string }
		if err := json.Unmarshal(body, &a); err != nil || a.ID == "" {
			return fmt.Errorf("create answer without an id: %.200s", body)
		}
		id = a.ID
	}
	l.mu.Lock()
	l.created = append(l.created, id)
	l.mu.Unlock()
	return nil
}

// measure runs one phase: opt.Clients clients, each with one request in
// flight, send requests made by newReq for the warm-up and the measured
// time. A request counts when its answer is read within the measured time;
// rates and latencies are of those, errors of the whole phase. With
// created, every API created (measured or not) is kept for the clean-up.
func (l *loader) measure(ctx context.Context, ph *LoadPhase, want int, newReq func(context.Context) (*http.Request, error), created bool) {
	start := time.Now()
	from, until := start.Add(l.opt.Warmup), start.Add(l.opt.Warmup+l.opt.Duration)
	type result struct {
		lat   []time.Duration
		bytes int64
	}
	results := make([]result, l.opt.Clients)
	var counted, failed atomic.Int64
	var errMu sync.Mutex
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			res := &results[i]
			var buf bytes.Buffer
			for {
				t0 := time.Now()
				if !t0.Before(until) || ctx.Err() != nil {
					return
				}
				req, err := newReq(ctx)
				var n int64
				if err == nil {
					n, err = l.do(req, want, &buf, created)
				}
				t1 := time.Now()
				if err == nil && created {
					err = l.keepCreated(buf.Bytes())
				}
				if err != nil {
					if ctx.Err() != nil {
						return // interrupted: not the server's failure
					}
					if failed.Add(1) <= firstErrors {
						errMu.Lock()
						ph.FirstErrors = append(ph.FirstErrors, err.Error())
						errMu.Unlock()
					}
					continue
				}
				if !t1.Before(from) && !t1.After(until) {
					res.lat = append(res.lat, t1.Sub(t0))
					res.bytes += n
					counted.Add(1)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case now := <-tick.C:
			if now.Before(from) {
				l.progress("%s: warming up, %.0f s left", ph.Name, from.Sub(now).Seconds())
			} else {
				l.progress("%s: %.0f of %.0f s, %d answered, %d errors", ph.Name, now.Sub(from).Seconds(), l.opt.Duration.Seconds(), counted.Load(), failed.Load())
			}
		}
	}

	var lat []float64
	var size int64
	for _, r := range results {
		for _, d := range r.lat {
			lat = append(lat, ms(d))
		}
		size += r.bytes
	}
	ph.Requests, ph.Errors = len(lat), int(failed.Load())
	if ph.FirstErrors == nil {
		ph.FirstErrors = []string{}
	}
	if len(lat) == 0 {
		return
	}
	// The measured time, shorter than asked when the run was interrupted.
	end := time.Now()
	if end.After(until) {
		end = until
	}
	if secs := end.Sub(from).Seconds(); secs > 0 {
		ph.PerSec = float64(len(lat)) / secs
	}
	ph.ResponseBytes = size / int64(len(lat))
	ph.P50, ph.P90, ph.P99, ph.Max = quantile(lat, 0.5), quantile(lat, 0.9), quantile(lat, 0.99), quantile(lat, 1)
}

// cleanup deletes what the run created and has not deleted yet: the APIs,
// concurrently, then the projects (a project with APIs cannot be deleted).
// It runs even when the run was interrupted, with a context of its own,
// and adds what it deleted and its time to rep.
func (l *loader) cleanup(rep *LoadReport) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	l.mu.Lock()
	apis, projects := l.created[l.cleaned:], l.projects[l.cleanedProjects:]
	l.cleaned, l.cleanedProjects = len(l.created), len(l.projects)
	l.mu.Unlock()
	var next, deleted atomic.Int64
	var wg sync.WaitGroup
	for range min(cleanupClients, len(apis)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(apis) || ctx.Err() != nil {
					return
				}
				// 404: already gone, which is what the clean-up wants.
				if err := l.call(ctx, "DELETE", "/api/v1/apis/"+apis[i], nil, nil, 204, 404); err != nil {
					l.fail("clean-up: %v", err)
					continue
				}
				if k := deleted.Add(1); k%100 == 0 {
					l.progress("deleting APIs %d/%d", k, len(apis))
				}
			}
		})
	}
	wg.Wait()
	rep.DeletedAPIs += int(deleted.Load())
	l.cleanupGateways(ctx, rep)
	for _, p := range projects {
		if err := l.call(ctx, "DELETE", "/api/v1/projects/"+p, nil, nil, 204); err != nil {
			l.fail("clean-up: %v", err)
			continue
		}
		rep.DeletedProjects++
	}
	rep.CleanupSec += time.Since(start).Seconds()
}

// WriteTable writes the report for a person.
func (rep *LoadReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "target     %s (%s)\n", rep.Target, rep.Protocol)
	fmt.Fprintf(w, "scenario   %s: %d clients, %s warm-up, then %s measured per phase\n", rep.Scenario, rep.Clients,
		time.Duration(rep.WarmupSec*float64(time.Second)), time.Duration(rep.DurationSec*float64(time.Second)))
	if rep.Project != "" {
		fmt.Fprintf(w, "project    %s: %d APIs", rep.Project, rep.APIs)
		if rep.Filled > 0 {
			fmt.Fprintf(w, " (%d created for the run in %.1f s)", rep.Filled, rep.FillSec)
		}
		fmt.Fprintln(w)
	}
	if rep.Keys > 0 {
		fmt.Fprintf(w, "keys       %d on the project's APIs (%d each, created in %.1f s); gateway %s, every API deployed to it in %.1f s\n",
			rep.Keys, rep.Keys/max(1, rep.APIs), rep.KeysFillSec, rep.Gateway, rep.DeploySec)
	}
	fmt.Fprintf(w, "\n%-10s %7s %7s %9s %9s %8s %8s %8s %8s %10s %7s\n",
		"phase", "apis", "offset", "answered", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms", "bytes each", "errors")
	for _, ph := range rep.Phases {
		apis, offset := "-", "-"
		if ph.Name != "create" {
			apis = strconv.Itoa(ph.APIs)
		}
		if ph.Name == "list" {
			offset = strconv.Itoa(ph.Offset)
		}
		fmt.Fprintf(w, "%-10s %7s %7s %9d %9.1f %8.1f %8.1f %8.1f %8.1f %10d %7d\n", ph.Name, apis, offset,
			ph.Requests, ph.PerSec, ph.P50, ph.P90, ph.P99, ph.Max, ph.ResponseBytes, ph.Errors)
	}
	if rep.Kept {
		fmt.Fprintf(w, "\nkept %d APIs and the projects %v\n", rep.CreatedAPIs, rep.CreatedProjects)
	} else {
		fmt.Fprintf(w, "\ndeleted %d of %d APIs, %d of %d projects and %d of %d gateways created, in %.1f s\n",
			rep.DeletedAPIs, rep.CreatedAPIs, rep.DeletedProjects, len(rep.CreatedProjects), rep.DeletedGateways,
			rep.CreatedGateways, rep.CleanupSec)
	}
	errs := len(rep.Errors)
	for _, ph := range rep.Phases {
		errs += ph.Errors
	}
	fmt.Fprintf(w, "%d errors\n", errs)
	for _, ph := range rep.Phases {
		for _, e := range ph.FirstErrors {
			fmt.Fprintf(w, "  %s: %s\n", ph.Name, e)
		}
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}
