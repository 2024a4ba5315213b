package store

// Storage shape of an API definition. The apis row holds, as columns,
// everything that is looked up or constrained: identity, project and
// organization, the (project, name, version) and (organization, context,
// version) uniqueness rules, and the fields lists sort or filter on. Backend
// services and operations are child rows, because they are constrained per
// row (backend names unique within the API) and because an operation's
// method and path are what a future query for "who serves GET /x" needs.
// What no query ever looks inside — mtls, security, cors, rate limiting,
// and the leaf settings of each backend and operation — is JSON in one TEXT
// column per row. All rows of an API are written in one transaction.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// API is a REST API definition, exactly as the contract's JSON.
type API struct {
	ID               string           `json:"id"`
	Name             string           `json:"name"`
	DisplayName      string           `json:"displayName"`
	Description      string           `json:"description"`
	Context          string           `json:"context"`
	Version          string           `json:"version"`
	Provider         string           `json:"provider"`
	ProjectID        string           `json:"projectId"`
	OrganizationID   string           `json:"organizationId"`
	CreatedAt        time.Time        `json:"createdAt"`
	UpdatedAt        time.Time        `json:"updatedAt"`
	LifeCycleStatus  string           `json:"lifeCycleStatus"`
	HasThumbnail     bool             `json:"hasThumbnail"`
	IsDefaultVersion bool             `json:"isDefaultVersion"`
	IsRevision       bool             `json:"isRevision"`
	RevisionedAPIID  string           `json:"revisionedApiId"`
	RevisionID       int              `json:"revisionId"`
	Type             string           `json:"type"`
	Transport        []string         `json:"transport"`
	MTLS             *MTLS            `json:"mtls,omitempty"`
	Security         *Security        `json:"security,omitempty"`
	CORS             *CORS            `json:"cors,omitempty"`
	BackendServices  []BackendService `json:"backend-services"`
	RateLimiting     *RateLimiting    `json:"api-rate-limiting,omitempty"`
	Operations       []Operation      `json:"operations"`
	// SubscriptionValidation asks second-generation gateways to admit only
	// callers with an active subscription (contract §7).
	SubscriptionValidation bool `json:"subscriptionValidation"`
	// Handle names the API uniquely in its organization, for gateways
	// that name resources (RestApi metadata.name). Made from the context
	// and version unless a gateway reported the API under one.
	Handle string `json:"-"`
}

// MTLS configures mutual TLS, for an API or for a backend endpoint.
type MTLS struct {
	Enabled                    bool   `json:"enabled" yaml:"enabled"`
	EnforceIfClientCertPresent bool   `json:"enforceIfClientCertPresent" yaml:"enforceIfClientCertPresent"`
	VerifyClient               bool   `json:"verifyClient" yaml:"verifyClient"`
	ClientCert                 string `json:"clientCert,omitempty" yaml:"clientCert,omitempty"`
	ClientKey                  string `json:"clientKey,omitempty" yaml:"clientKey,omitempty"`
	CACert                     string `json:"caCert,omitempty" yaml:"caCert,omitempty"`
}

// Security configures how clients of the API authenticate.
type Security struct {
	Enabled bool    `json:"enabled"`
	APIKey  *APIKey `json:"apiKey,omitempty"`
	OAuth2  *OAuth2 `json:"oauth2,omitempty"`
}

// APIKey says where a client's API key is read from.
type APIKey struct {
	Enabled bool   `json:"enabled"`
	Header  string `json:"header,omitempty"`
	Query   string `json:"query,omitempty"`
	Cookie  string `json:"cookie,omitempty"`
}

// OAuth2 lists the allowed grant types and scopes.
type OAuth2 struct {
	GrantTypes *GrantTypes `json:"grantTypes,omitempty"`
	Scopes     []string    `json:"scopes,omitempty"`
}

// GrantTypes are the OAuth 2 grants an API accepts.
type GrantTypes struct {
	AuthorizationCode *RedirectGrant `json:"authorizationCode,omitempty"`
	Implicit          *RedirectGrant `json:"implicit,omitempty"`
	Password          *Grant         `json:"password,omitempty"`
	ClientCredentials *Grant         `json:"clientCredentials,omitempty"`
}

// Grant is an OAuth 2 grant switched on or off.
type Grant struct {
	Enabled bool `json:"enabled"`
}

// RedirectGrant is a grant with a callback URL.
type RedirectGrant struct {
	Enabled     bool   `json:"enabled"`
	CallbackURL string `json:"callbackUrl,omitempty"`
}

// CORS is the API's CORS policy; the lists are comma-separated strings.
type CORS struct {
	Enabled          bool   `json:"enabled"`
	AllowOrigins     string `json:"allowOrigins,omitempty"`
	AllowMethods     string `json:"allowMethods,omitempty"`
	AllowHeaders     string `json:"allowHeaders,omitempty"`
	ExposeHeaders    string `json:"exposeHeaders,omitempty"`
	MaxAge           int    `json:"maxAge,omitempty"`
	AllowCredentials bool   `json:"allowCredentials"`
}

// BackendService is a named group of upstream endpoints.
type BackendService struct {
	Name           string          `json:"name"`
	IsDefault      bool            `json:"isDefault"`
	Endpoints      []Endpoint      `json:"endpoints"`
	Timeout        *Timeout        `json:"timeout,omitempty"`
	Retries        int             `json:"retries,omitempty"`
	LoadBalance    *LoadBalance    `json:"loadBalance,omitempty"`
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
}

// Endpoint is one upstream URL.
type Endpoint struct {
	URL         string       `json:"url"`
	Description string       `json:"description,omitempty"`
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	Weight      *int         `json:"weight,omitempty"`
	MTLS        *MTLS        `json:"mtls,omitempty"`
}

// HealthCheck probes an endpoint; times in seconds.
type HealthCheck struct {
	Enabled            bool `json:"enabled" yaml:"enabled"`
	Interval           int  `json:"interval,omitempty" yaml:"interval,omitempty"`
	Timeout            int  `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	UnhealthyThreshold int  `json:"unhealthyThreshold,omitempty" yaml:"unhealthyThreshold,omitempty"`
	HealthyThreshold   int  `json:"healthyThreshold,omitempty" yaml:"healthyThreshold,omitempty"`
}

// Timeout bounds upstream calls, in milliseconds.
type Timeout struct {
	Connect int `json:"connect,omitempty"`
	Read    int `json:"read,omitempty"`
	Write   int `json:"write,omitempty"`
}

// LoadBalance spreads calls across endpoints.
type LoadBalance struct {
	Algorithm string `json:"algorithm,omitempty"`
	Failover  bool   `json:"failover"`
}

// CircuitBreaker limits calls to a failing backend.
type CircuitBreaker struct {
	Enabled            bool `json:"enabled"`
	MaxConnections     int  `json:"maxConnections,omitempty"`
	MaxPendingRequests int  `json:"maxPendingRequests,omitempty"`
	MaxRequests        int  `json:"maxRequests,omitempty"`
	MaxRetries         int  `json:"maxRetries,omitempty"`
}

// RateLimiting is the API-wide rate limit.
type RateLimiting struct {
	Enabled           bool   `json:"enabled"`
	RateLimitCount    int    `json:"rateLimitCount,omitempty"`
	RateLimitTimeUnit string `json:"rateLimitTimeUnit,omitempty"`
	StopOnQuotaReach  bool   `json:"stopOnQuotaReach"`
}

// Operation is one resource of the API.
type Operation struct {
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Request     *OperationRequest `json:"request"`
}

// OperationRequest says what an operation matches and how it is served.
type OperationRequest struct {
	Method           string          `json:"method"`
	Path             string          `json:"path"`
	BackendServices  []BackendRef    `json:"backend-services,omitempty"`
	Authentication   *Authentication `json:"authentication,omitempty"`
	RequestPolicies  []Policy        `json:"requestPolicies,omitempty"`
	ResponsePolicies []Policy        `json:"responsePolicies,omitempty"`
}

// BackendRef names a backend service of the API, with a routing weight.
type BackendRef struct {
	Name   string `json:"name" yaml:"name"`
	Weight *int   `json:"weight,omitempty" yaml:"weight,omitempty"`
}

// Authentication is an operation's authentication requirement.
type Authentication struct {
	Required bool     `json:"required" yaml:"required"`
	Scopes   []string `json:"scopes,omitempty" yaml:"scopes,omitempty"`
}

// Policy is a named policy with free-form parameters, kept byte for byte.
type Policy struct {
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params,omitempty"`
}

// apiSettings is the JSON column of the apis row.
type apiSettings struct {
	MTLS         *MTLS         `json:"mtls,omitempty"`
	Security     *Security     `json:"security,omitempty"`
	CORS         *CORS         `json:"cors,omitempty"`
	RateLimiting *RateLimiting `json:"rateLimiting,omitempty"`
	// SubscriptionValidation is API.SubscriptionValidation.
	SubscriptionValidation bool `json:"subscriptionValidation,omitempty"`
}

const apiColumns = `id, organization_id, project_id, name, display_name, description, context, version, provider,
	lifecycle_status, type, transport, has_thumbnail, is_default_version, is_revision, revisioned_api_id,
	revision_id, settings, created_at, updated_at, handle`

// CreateAPI stores a validated API with all of its children in one
// transaction and returns it as stored. A project that is not the
// organization's is ErrInvalid; a (project, name, version) or
// (organization, context, version) clash is ErrConflict.
func (db *DB) CreateAPI(ctx context.Context, a *API) (*API, error) {
	a.ID = newID()
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		return insertAPI(ctx, tx, a, now)
	})
	if err != nil {
		return nil, err
	}
	return asStored(a), nil
}

// asStored makes a, just written, what reading it back would return,
// without reading it back (a third of the cost of a create): timestamps
// are kept to the microsecond, absent lists read back empty, and every
// other field reads back as written (TestAPIRoundTrip* compare the two).
func asStored(a *API) *API {
	a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC().Truncate(time.Microsecond), a.UpdatedAt.UTC().Truncate(time.Microsecond)
	if a.BackendServices == nil {
		a.BackendServices = []BackendService{}
	}
	if a.Operations == nil {
		a.Operations = []Operation{}
	}
	return a
}

// insertAPI writes a (whose ID is set) with its children.
func insertAPI(ctx context.Context, tx *Tx, a *API, now time.Time) error {
	if _, err := findProject(ctx, tx, a.OrganizationID, a.ProjectID); errors.Is(err, ErrNotFound) {
		return invalid("projectId: project %s not found in this organization", a.ProjectID)
	} else if err != nil {
		return err
	}
	a.CreatedAt, a.UpdatedAt = now, now
	if _, err := tx.sealer.sealSecrets(a); err != nil {
		return err
	}
	if a.Handle == "" {
		h, err := freeHandle(ctx, tx, a.OrganizationID, a.ID, a.Context, a.Version)
		if err != nil {
			return err
		}
		a.Handle = h
	}
	row, err := apiRowArgs(a)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO apis (`+apiColumns+`) VALUES (
		$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`, row...)
	if constraintOf(err) == uniqueViolation {
		return apiConflict(ctx, tx, a, err)
	}
	if err != nil {
		return fmt.Errorf("insert api: %w", err)
	}
	if err := insertAPIChildren(ctx, tx, a); err != nil {
		return err
	}
	return setAPISecretRefs(ctx, tx, a, false)
}

// apiConflict tells which uniqueness rule a failed insert broke. The 409
// itself comes from the constraint; this only words the message. PostgreSQL
// names the constraint in the error (and refuses further statements in the
// transaction); SQLite does not, but lets the transaction go on, so it is
// asked.
func apiConflict(ctx context.Context, tx *Tx, a *API, err error) error {
	switch pgConstraint(err) {
	case "":
	case "apis_pkey":
		return conflict("API id %s is already in use", a.ID)
	case "apis_project_id_name_version_key":
		return conflict("an API named %q with version %q already exists in this project", a.Name, a.Version)
	case "apis_org_handle":
		return conflict("the handle %q is already used by another API of this organization", a.Handle)
	default:
		return conflict("context %q with version %q is already used by another API of this organization", a.Context, a.Version)
	}
	var n int
	tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM apis WHERE project_id = $1 AND name = $2 AND version = $3 AND id <> $4`,
		a.ProjectID, a.Name, a.Version, a.ID).Scan(&n)
	if n > 0 {
		return conflict("an API named %q with version %q already exists in this project", a.Name, a.Version)
	}
	tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM apis WHERE organization_id = $1 AND handle = $2 AND id <> $3`,
		a.OrganizationID, a.Handle, a.ID).Scan(&n)
	if n > 0 {
		return conflict("the handle %q is already used by another API of this organization", a.Handle)
	}
	return conflict("context %q with version %q is already used by another API of this organization", a.Context, a.Version)
}

// handleFrom makes a handle from an API's context and version: lower-case
// letters, digits and '-', at most 63 characters, as resource names go.
func handleFrom(context, version string) string {
	var b strings.Builder
	dash := true
	for _, r := range strings.ToLower(strings.TrimPrefix(context, "/") + "-" + version) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	h := strings.Trim(b.String(), "-")
	if len(h) > 54 {
		h = strings.TrimRight(h[:54], "-")
	}
	if h == "" || h[0] < 'a' {
		h = "api-" + h
	}
	return h
}

// freeHandle returns handleFrom(context, version), or, when another API of
// the organization has it, the same with the first digits of the API id.
func freeHandle(ctx context.Context, tx *Tx, orgID, apiID, context, version string) (string, error) {
	h := handleFrom(context, version)
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM apis WHERE organization_id = $1 AND handle = $2`, orgID, h).Scan(&n); err != nil {
		return "", err
	}
	if n > 0 {
		h += "-" + apiID[:8]
	}
	return h, nil
}

// settingsJSON is the settings column of a.
func settingsJSON(a *API) (string, error) {
	b, err := marshalJSON(apiSettings{MTLS: a.MTLS, Security: a.Security, CORS: a.CORS, RateLimiting: a.RateLimiting,
		SubscriptionValidation: a.SubscriptionValidation})
	return string(b), err
}

func apiRowArgs(a *API) ([]any, error) {
	transport, err := marshalJSON(a.Transport)
	if err != nil {
		return nil, err
	}
	settings, err := settingsJSON(a)
	if err != nil {
		return nil, err
	}
	return []any{a.ID, a.OrganizationID, a.ProjectID, a.Name, a.DisplayName, a.Description, a.Context, a.Version,
		a.Provider, a.LifeCycleStatus, a.Type, string(transport), a.HasThumbnail, a.IsDefaultVersion, a.IsRevision,
		a.RevisionedAPIID, a.RevisionID, settings, formatTime(a.CreatedAt), formatTime(a.UpdatedAt), a.Handle}, nil
}

// insertAPIChildren writes the backend services and operations of a.
func insertAPIChildren(ctx context.Context, tx *Tx, a *API) error {
	backends := make([][]any, len(a.BackendServices))
	for i, b := range a.BackendServices {
		cfg, err := marshalJSON(b)
		if err != nil {
			return err
		}
		backends[i] = []any{a.ID, i, b.Name, string(cfg)}
	}
	err := insertRows(ctx, tx, `INSERT INTO api_backend_services (api_id, position, name, config) VALUES `, backends)
	if constraintOf(err) == uniqueViolation {
		seen := map[string]bool{}
		for i, b := range a.BackendServices {
			if seen[b.Name] {
				return invalid("backend-services[%d].name: %q is used by another backend service of this API", i, b.Name)
			}
			seen[b.Name] = true
		}
	}
	if err != nil {
		return fmt.Errorf("insert backend services: %w", err)
	}
	ops := make([][]any, len(a.Operations))
	for i, op := range a.Operations {
		cfg, err := marshalJSON(op)
		if err != nil {
			return err
		}
		ops[i] = []any{a.ID, i, op.Request.Method, op.Request.Path, string(cfg)}
	}
	if err := insertRows(ctx, tx, `INSERT INTO api_operations (api_id, position, method, path, config) VALUES `, ops); err != nil {
		return fmt.Errorf("insert operations: %w", err)
	}
	return nil
}

// childRowsChunk bounds the rows of one insertRows statement on PostgreSQL
// (and so its parameters, well under the limit).
const childRowsChunk = 200

// insertRows runs insert (ending in VALUES) for rows. On PostgreSQL, where
// each statement is a round trip and an API has tens of children, a
// statement takes up to childRowsChunk rows. On SQLite, in process, one
// prepared statement a row is as fast, and a statement text per row count
// would crowd the statement cache.
func insertRows(ctx context.Context, tx *Tx, insert string, rows [][]any) error {
	chunkRows := childRowsChunk
	if tx.dialect != dialectPostgres {
		chunkRows = 1
	}
	for start := 0; start < len(rows); start += chunkRows {
		chunk := rows[start:min(start+chunkRows, len(rows))]
		var q strings.Builder
		q.WriteString(insert)
		var args []any
		for i, row := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteByte('(')
			for j, v := range row {
				if j > 0 {
					q.WriteString(", ")
				}
				args = append(args, v)
				q.WriteString("$" + strconv.Itoa(len(args)))
			}
			q.WriteByte(')')
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// API returns one API of the organization with all of its children. An API
// of another organization is ErrNotFound, exactly like a missing one.
func (db *DB) API(ctx context.Context, orgID, id string) (*API, error) {
	var a *API
	err := db.readTx(ctx, func(tx *Tx) error {
		list, err := queryAPIs(ctx, tx, `WHERE id = $1 AND organization_id = $2`, id, orgID)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("API %s not found", id)
		}
		a = list[0]
		return nil
	})
	return a, err
}

// APIs lists the organization's APIs (of one project, when projectID is not
// empty), newest first, with their children, and the total.
func (db *DB) APIs(ctx context.Context, orgID, projectID string, page Page) ([]*API, int, error) {
	refs, loaded, total, err := db.APIsPage(ctx, orgID, projectID, page, nil)
	if err != nil {
		return nil, 0, err
	}
	list := make([]*API, 0, len(refs))
	for _, r := range refs {
		if a := loaded[r.ID]; a != nil {
			list = append(list, a)
		}
	}
	return list, total, nil
}

// APIRef names one state of an API: UpdatedAt changes with every change of
// the API (UpdateAPI keeps it strictly increasing), so a copy made from an
// API at a ref is current as long as the ref is.
type APIRef struct {
	ID        string
	UpdatedAt time.Time
}

// APIsPage is a page of APIs as APIs lists it, for a caller that keeps
// copies of APIs: it returns the page's refs, in order, and loads in full
// only those for which have (nil: none) reports no copy. Everything is read
// in one transaction, so the refs and the APIs loaded agree. It makes at
// most five queries whatever the page size (project, count, refs, rows,
// children), and finds the page in an index whatever its offset.
func (db *DB) APIsPage(ctx context.Context, orgID, projectID string, page Page, have func(APIRef) bool) (
	refs []APIRef, loaded map[string]*API, total int, err error) {
	cond, args := `WHERE organization_id = $1`, []any{orgID}
	if projectID != "" {
		cond, args = cond+` AND project_id = $2`, append(args, projectID)
	}
	err = db.readTx(ctx, func(tx *Tx) error {
		if projectID != "" {
			if _, err := findProject(ctx, tx, orgID, projectID); err != nil {
				return err
			}
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM apis `+cond, args...).Scan(&total); err != nil {
			return err
		}
		n := len(args)
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(`SELECT id, updated_at FROM apis %s
			ORDER BY created_at DESC, id DESC LIMIT $%d OFFSET $%d`, cond, n+1, n+2), append(args, page.Limit, page.Offset)...)
		if err != nil {
			return err
		}
		var missing []any
		for rows.Next() {
			var r APIRef
			if err := rows.Scan(&r.ID, dbTime{&r.UpdatedAt}); err != nil {
				rows.Close()
				return err
			}
			refs = append(refs, r)
			if have == nil || !have(r) {
				missing = append(missing, r.ID)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(missing) == 0 {
			return err
		}
		list, err := queryAPIs(ctx, tx, `WHERE id IN (`+placeholders(1, len(missing))+`)`, missing...)
		loaded = make(map[string]*API, len(list))
		for _, a := range list {
			loaded[a.ID] = a
		}
		return err
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list APIs: %w", err)
	}
	return refs, loaded, total, nil
}

// queryAPIs loads the apis rows matching where, then their backend services
// and operations with one query each.
func queryAPIs(ctx context.Context, tx *Tx, where string, args ...any) ([]*API, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+apiColumns+` FROM apis `+where, args...)
	if err != nil {
		return nil, err
	}
	list := []*API{}
	byID := map[string]*API{}
	for rows.Next() {
		var a API
		var transport, settings string
		if err := rows.Scan(&a.ID, &a.OrganizationID, &a.ProjectID, &a.Name, &a.DisplayName, &a.Description,
			&a.Context, &a.Version, &a.Provider, &a.LifeCycleStatus, &a.Type, &transport, &a.HasThumbnail,
			&a.IsDefaultVersion, &a.IsRevision, &a.RevisionedAPIID, &a.RevisionID, &settings,
			dbTime{&a.CreatedAt}, dbTime{&a.UpdatedAt}, &a.Handle); err != nil {
			rows.Close()
			return nil, err
		}
		var s apiSettings
		if err := errors.Join(json.Unmarshal([]byte(transport), &a.Transport), json.Unmarshal([]byte(settings), &s)); err != nil {
			rows.Close()
			return nil, fmt.Errorf("api %s: %w", a.ID, err)
		}
		a.MTLS, a.Security, a.CORS, a.RateLimiting = s.MTLS, s.Security, s.CORS, s.RateLimiting
		a.SubscriptionValidation = s.SubscriptionValidation
		a.BackendServices, a.Operations = []BackendService{}, []Operation{}
		list = append(list, &a)
		byID[a.ID] = &a
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(list) == 0 {
		return list, err
	}
	ids := make([]any, len(list))
	for i, a := range list {
		ids[i] = a.ID
	}
	in := `api_id IN (` + placeholders(1, len(ids)) + `) ORDER BY api_id, position`
	err = eachConfig(ctx, tx, `SELECT api_id, config FROM api_backend_services WHERE `+in, ids, func(a *API, cfg []byte) error {
		var b BackendService
		if err := json.Unmarshal(cfg, &b); err != nil {
			return err
		}
		a.BackendServices = append(a.BackendServices, b)
		return nil
	}, byID)
	if err != nil {
		return nil, err
	}
	err = eachConfig(ctx, tx, `SELECT api_id, config FROM api_operations WHERE `+in, ids, func(a *API, cfg []byte) error {
		var op Operation
		if err := json.Unmarshal(cfg, &op); err != nil {
			return err
		}
		a.Operations = append(a.Operations, op)
		return nil
	}, byID)
	return list, err
}

func eachConfig(ctx context.Context, tx *Tx, query string, args []any, add func(*API, []byte) error, byID map[string]*API) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var cfg []byte
		if err := rows.Scan(&id, &cfg); err != nil {
			return err
		}
		if err := add(byID[id], cfg); err != nil {
			return fmt.Errorf("api %s: %w", id, err)
		}
	}
	return rows.Err()
}

// UpdateAPI reads the API, lets change modify it (or refuse with an error),
// and replaces the stored row and children in one transaction. It returns
// the API as stored.
func (db *DB) UpdateAPI(ctx context.Context, orgID, id string, change func(*API) error) (*API, error) {
	return db.updateAPI(ctx, orgID, id, change, nil)
}

// updateAPI is UpdateAPI with one more step in its transaction, after the
// API is written (nil: none).
func (db *DB) updateAPI(ctx context.Context, orgID, id string, change func(*API) error,
	then func(ctx context.Context, tx *Tx, now time.Time) error) (*API, error) {
	var updated *API
	err := db.writeTx(ctx, func(tx *Tx, now time.Time) error {
		if err := tx.lockRow(ctx, "apis", id); err != nil {
			return err
		}
		list, err := queryAPIs(ctx, tx, `WHERE id = $1 AND organization_id = $2`, id, orgID)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return notFound("API %s not found", id)
		}
		a := list[0]
		created, handle := a.CreatedAt, a.Handle
		if err := change(a); err != nil {
			return err
		}
		if !now.Truncate(time.Microsecond).After(a.UpdatedAt) { // stored to the microsecond
			now = a.UpdatedAt.Add(time.Microsecond) // a new state, a new ref (APIRef)
		}
		a.ID, a.OrganizationID, a.CreatedAt, a.UpdatedAt, a.Handle = id, orgID, created, now, handle
		if _, err := tx.sealer.sealSecrets(a); err != nil {
			return err
		}
		row, err := apiRowArgs(a)
		if err != nil {
			return err
		}
		// Identity columns (id, organization, project, name, context, version
		// and created_at) are not in the SET list: they never change.
		res, err := tx.ExecContext(ctx, `UPDATE apis SET display_name = $5, description = $6, provider = $9,
			lifecycle_status = $10, type = $11, transport = $12, has_thumbnail = $13, is_default_version = $14,
			is_revision = $15, revisioned_api_id = $16, revision_id = $17, settings = $18, updated_at = $20
			WHERE id = $1 AND organization_id = $2 AND project_id = $3 AND name = $4 AND context = $7
			AND version = $8 AND created_at = $19 AND handle = $21`, row...)
		if err != nil {
			return fmt.Errorf("update api: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("update api %s: identity fields were changed", id)
		}
		for _, table := range []string{"api_backend_services", "api_operations"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE api_id = $1`, id); err != nil {
				return fmt.Errorf("update api: %w", err)
			}
		}
		updated = a
		if err := insertAPIChildren(ctx, tx, a); err != nil {
			return err
		}
		if err := setAPISecretRefs(ctx, tx, a, true); err != nil {
			return err
		}
		if then != nil {
			return then(ctx, tx, now)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return asStored(updated), nil
}

func deleteAPI(ctx context.Context, tx *Tx, orgID, id string) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM apis WHERE id = $1 AND organization_id = $2`, id, orgID)
	if err != nil {
		return fmt.Errorf("delete api: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("API %s not found", id)
	}
	return nil
}
