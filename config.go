package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"platform-api/store"
)

// Config is every setting of the server, read once at start from flags and
// environment (flags win) and passed down. Nothing reads the environment later.
type Config struct {
	Addr          string // PLATFORM_ADDR: listen address; default ":8443"
	DataDir       string // PLATFORM_DATA_DIR: database, TLS files, signing key; default "./data"
	DBPath        string // PLATFORM_DB: SQLite file, or postgres:// URL; default "<data dir>/platform.db"
	DBMaxConns    int    // PLATFORM_DB_MAX_CONNS: database connection pool; default 16 (PostgreSQL), 2 per CPU (SQLite readers)
	KeyFile       string // PLATFORM_ENCRYPTION_KEY_FILE: keys sealing secrets at rest; default "<data dir>/encryption.key"
	KeepRevisions int    // PLATFORM_REVISIONS_KEEP: revisions kept per API besides deployed ones; default 20

	ReplicaID    string        // PLATFORM_REPLICA_ID: this replica's id (PostgreSQL); default from the data directory (replicaID)
	ReplicaLease time.Duration // PLATFORM_REPLICA_LEASE: a dead replica's connections stop counting after this; default 15s
	DeliveryWait time.Duration // PLATFORM_DELIVERY_WAIT: how long a deploy waits for other replicas to report; default 2s

	DeployAckTimeout   time.Duration // PLATFORM_DEPLOY_ACK_TIMEOUT: a sent deployment unacknowledged this long is FAILED; default 60s
	TombstoneRetention time.Duration // PLATFORM_TOMBSTONE_RETENTION: undeployments remembered for gateways away; default 720h (30 days)
	GenerationGrace    time.Duration // PLATFORM_WS_GENERATION_GRACE: wait for a new connection's manifest; default 2s
	TLSCert            string        // PLATFORM_TLS_CERT: PEM certificate; empty means self-signed
	TLSKey             string        // PLATFORM_TLS_KEY: PEM key matching TLSCert
	TLSHosts           []string      // PLATFORM_TLS_HOSTS: extra names for the self-signed certificate
	JWKS               string        // PLATFORM_JWT_JWKS: JWKS file path or https URL
	HMACSecret         string        // PLATFORM_JWT_HMAC_SECRET: HS256 secret, at least 32 bytes
	JWTIssuer          string        // PLATFORM_JWT_ISSUER: required iss claim, if set
	JWTAudience        string        // PLATFORM_JWT_AUDIENCE: required aud claim, if set
	JWTLocalKey        bool          // PLATFORM_JWT_LOCAL_KEY: trust the server's own key; default true
	JWTInsecure        bool          // PLATFORM_JWT_INSECURE_SKIP_VERIFY: accept unsigned JWTs; default false
	LogLevel           slog.Level    // PLATFORM_LOG_LEVEL: debug|info|warn|error; default info
	LogFormat          string        // PLATFORM_LOG_FORMAT: text|json; default text
	MaxBodyBytes       int64         // PLATFORM_MAX_BODY_BYTES: JSON body limit; default 1 MiB
	MaxOpenAPIBytes    int64         // PLATFORM_MAX_OPENAPI_BYTES: imported OpenAPI document limit; default 10 MiB
	CORSOrigins        []string      // PLATFORM_CORS_ORIGINS: allowed browser origins; default none
	ShutdownTimeout    time.Duration // PLATFORM_SHUTDOWN_TIMEOUT: grace for in-flight work; default 15s

	WSPingInterval       time.Duration // PLATFORM_WS_PING_INTERVAL: heartbeat ping period; default 20s
	WSTimeout            time.Duration // PLATFORM_WS_TIMEOUT: close a connection silent this long; default 30s
	WSMaxConnections     int           // PLATFORM_WS_MAX_CONNECTIONS: live gateway connections in all; default 10000
	WSMaxPerOrg          int           // PLATFORM_WS_MAX_CONNECTIONS_PER_ORG: live gateway connections of one organization; default half of WSMaxConnections
	WSMaxPerGateway      int           // PLATFORM_WS_MAX_CONNECTIONS_PER_GATEWAY: replicas of one gateway; default 32
	WSRateLimitPerMinute int           // PLATFORM_WS_RATE_LIMIT_PER_MINUTE: connect attempts per client address; default 600
	TrustForwardedFor    bool          // PLATFORM_TRUST_FORWARDED_FOR: take the client address from X-Forwarded-For; default false
	MetricsToken         string        // PLATFORM_METRICS_TOKEN: bearer token for /metrics and /debug/pprof; empty: served on the operational listener only
	OpsAddr              string        // PLATFORM_OPS_ADDR: the operational listener (plain HTTP, loopback unless a token is set); default off
	ReadHeaderTimeout    time.Duration // PLATFORM_READ_HEADER_TIMEOUT: TLS handshake and request headers; default 10s

	MaxDocumentAnswers           int // PLATFORM_MAX_DOCUMENT_ANSWERS: gateways' answers of many documents at once; default 8
	MaxDocumentAnswersPerGateway int // PLATFORM_MAX_DOCUMENT_ANSWERS_PER_GATEWAY: the same, per gateway; default 2
	MaxGatewayCreatedAPIs        int // PLATFORM_MAX_GATEWAY_CREATED_APIS: APIs one gateway may create by its reports and imports; default 5000
}

// minMetricsToken is the shortest metrics token taken: /metrics and the
// profiles it guards must not yield to guessing.
const minMetricsToken = 16

// setting binds one Config field to an environment variable and a flag.
type setting struct {
	env, flag, def, help string
	set                  func(c *Config, v string) error
}

func settings() []setting {
	return []setting{
		{"PLATFORM_ADDR", "addr", ":8443", "listen address (host:port)", func(c *Config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("want host:port such as :8443 or 127.0.0.1:8443")
			}
			c.Addr = v
			return nil
		}},
		{"PLATFORM_DATA_DIR", "data-dir", "./data", "directory for the database, TLS files and the JWT signing key", func(c *Config, v string) error {
			if v == "" {
				return errors.New("must not be empty")
			}
			c.DataDir = v
			return nil
		}},
		{"PLATFORM_DB", "db", "", "SQLite database file (default <data dir>/platform.db), or a postgres:// URL", func(c *Config, v string) error {
			if err := store.CheckDSN(v); err != nil {
				return err
			}
			c.DBPath = v
			return nil
		}},
		{"PLATFORM_DB_MAX_CONNS", "db-max-conns", "", "database connections in the pool (default 16 on PostgreSQL; SQLite: its readers, 2 per CPU)", func(c *Config, v string) error {
			if v == "" {
				return nil
			}
			return setPositive(func(c *Config) *int { return &c.DBMaxConns })(c, v)
		}},
		{"PLATFORM_ENCRYPTION_KEY_FILE", "encryption-key-file", "", "file of the keys that seal secrets at rest, made on first start (default <data dir>/encryption.key); replicas share it", setString(func(c *Config) *string { return &c.KeyFile })},
		{"PLATFORM_REVISIONS_KEEP", "revisions-keep", "20", "revisions kept per API besides the deployed ones (older ones are pruned)", setPositive(func(c *Config) *int { return &c.KeepRevisions })},
		{"PLATFORM_DEPLOY_ACK_TIMEOUT", "deploy-ack-timeout", "60s", "a deployment sent to a second-generation gateway and not acknowledged this long is FAILED (DEPLOYMENT_TIMEOUT)", setDuration(func(c *Config) *time.Duration { return &c.DeployAckTimeout })},
		{"PLATFORM_TOMBSTONE_RETENTION", "tombstone-retention", "720h", "how long undeployments and deletions are remembered for gateways that have not acknowledged them", setDuration(func(c *Config) *time.Duration { return &c.TombstoneRetention })},
		{"PLATFORM_REPLICA_ID", "replica-id", "", "this replica's id among those sharing a PostgreSQL database (default: kept in the data directory, so a restarted replica takes back its own)", setString(func(c *Config) *string { return &c.ReplicaID })},
		{"PLATFORM_REPLICA_LEASE", "replica-lease", "15s", "a replica that stops renewing its lease this long stops counting (its connections, its acknowledgements)", setDuration(func(c *Config) *time.Duration { return &c.ReplicaLease })},
		{"PLATFORM_DELIVERY_WAIT", "delivery-wait", "2s", "how long a deploy waits for the replicas holding its gateways' connections to report", setDuration(func(c *Config) *time.Duration { return &c.DeliveryWait })},
		{"PLATFORM_TLS_CERT", "tls-cert", "", "PEM certificate file (default: a self-signed one in the data dir)", setString(func(c *Config) *string { return &c.TLSCert })},
		{"PLATFORM_TLS_KEY", "tls-key", "", "PEM private key file for -tls-cert", setString(func(c *Config) *string { return &c.TLSKey })},
		{"PLATFORM_TLS_HOSTS", "tls-hosts", "", "comma-separated extra DNS names or IPs for the self-signed certificate (a name the kept certificate lacks makes a new one, with a new fingerprint)", func(c *Config, v string) error {
			c.TLSHosts = splitList(v)
			return nil
		}},
		{"PLATFORM_JWT_JWKS", "jwt-jwks", "", "JWKS file path or https URL whose keys sign trusted JWTs", setString(func(c *Config) *string { return &c.JWKS })},
		// The length is checked after parsing, in parseConfig: an error from
		// here would be printed with the value, and a secret is never printed.
		{"PLATFORM_JWT_HMAC_SECRET", "jwt-hmac-secret", "", "HS256 shared secret (at least 32 bytes; prefer the environment variable)", setString(func(c *Config) *string { return &c.HMACSecret })},
		{"PLATFORM_JWT_ISSUER", "jwt-issuer", "", "required iss claim (unchecked when empty)", setString(func(c *Config) *string { return &c.JWTIssuer })},
		{"PLATFORM_JWT_AUDIENCE", "jwt-audience", "", "required aud claim (unchecked when empty)", setString(func(c *Config) *string { return &c.JWTAudience })},
		{"PLATFORM_JWT_LOCAL_KEY", "jwt-local-key", "on", "trust JWTs signed with the server's own key (on|off)", setBool(func(c *Config) *bool { return &c.JWTLocalKey })},
		{"PLATFORM_JWT_INSECURE_SKIP_VERIFY", "jwt-insecure-skip-verify", "false", "DEVELOPMENT ONLY: accept JWTs without checking signatures", setBool(func(c *Config) *bool { return &c.JWTInsecure })},
		{"PLATFORM_LOG_LEVEL", "log-level", "info", "log level: debug, info, warn or error", func(c *Config, v string) error {
			return c.LogLevel.UnmarshalText([]byte(v))
		}},
		{"PLATFORM_LOG_FORMAT", "log-format", "text", "log format: text or json", func(c *Config, v string) error {
			if v != "text" && v != "json" {
				return errors.New("want text or json")
			}
			c.LogFormat = v
			return nil
		}},
		{"PLATFORM_MAX_BODY_BYTES", "max-body-bytes", "1048576", "largest JSON request body in bytes", func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1024 || n > 64<<20 {
				return errors.New("want a whole number of bytes from 1024 to 67108864")
			}
			c.MaxBodyBytes = n
			return nil
		}},
		{"PLATFORM_MAX_OPENAPI_BYTES", "max-openapi-bytes", "10485760", "largest OpenAPI document imported (POST /api/v1/apis/import-openapi and the other OpenAPI routes), in bytes", func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1024 || n > 64<<20 {
				return errors.New("want a whole number of bytes from 1024 to 67108864")
			}
			c.MaxOpenAPIBytes = n
			return nil
		}},
		{"PLATFORM_CORS_ORIGINS", "cors-origins", "", "comma-separated browser origins allowed by CORS, such as https://console.example.com (none when empty; * allows every origin, each answered with its own origin)", func(c *Config, v string) error {
			c.CORSOrigins = splitList(v)
			return nil
		}},
		{"PLATFORM_SHUTDOWN_TIMEOUT", "shutdown-timeout", "15s", "how long shutdown waits for in-flight requests and gateway connections", setDuration(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
		{"PLATFORM_WS_PING_INTERVAL", "ws-ping-interval", "20s", "how often gateways are pinged", setDuration(func(c *Config) *time.Duration { return &c.WSPingInterval })},
		{"PLATFORM_WS_TIMEOUT", "ws-timeout", "30s", "close a gateway connection silent this long (must exceed the ping interval)", setDuration(func(c *Config) *time.Duration { return &c.WSTimeout })},
		{"PLATFORM_WS_MAX_CONNECTIONS", "ws-max-connections", "10000", "most live gateway connections in all", setPositive(func(c *Config) *int { return &c.WSMaxConnections })},
		{"PLATFORM_WS_MAX_CONNECTIONS_PER_ORG", "ws-max-connections-per-org", "", "most live gateway connections of one organization (default: half of -ws-max-connections, so no tenant can take every slot)", func(c *Config, v string) error {
			if v == "" {
				c.WSMaxPerOrg = 0 // half of WSMaxConnections, set once that is known
				return nil
			}
			return setPositive(func(c *Config) *int { return &c.WSMaxPerOrg })(c, v)
		}},
		{"PLATFORM_WS_MAX_CONNECTIONS_PER_GATEWAY", "ws-max-connections-per-gateway", "32", "most live connections (replicas) of one gateway", setPositive(func(c *Config) *int { return &c.WSMaxPerGateway })},
		{"PLATFORM_WS_GENERATION_GRACE", "ws-generation-grace", "1s", "how long a new gateway connection waits for the gateway's manifest before it is taken for the first generation", setDuration(func(c *Config) *time.Duration { return &c.GenerationGrace })},
		{"PLATFORM_WS_RATE_LIMIT_PER_MINUTE", "ws-rate-limit-per-minute", "600", "gateway connection attempts allowed per client address per minute", setPositive(func(c *Config) *int { return &c.WSRateLimitPerMinute })},
		{"PLATFORM_READ_HEADER_TIMEOUT", "read-header-timeout", "10s", "time a client has for its TLS handshake and request headers (cuts off slow clients)", setDuration(func(c *Config) *time.Duration { return &c.ReadHeaderTimeout })},
		{"PLATFORM_METRICS_TOKEN", "metrics-token", "", "bearer token required by /metrics and /debug/pprof, on either port (empty: they are served on the operational listener only)", setString(func(c *Config) *string { return &c.MetricsToken })},
		{"PLATFORM_OPS_ADDR", "ops-addr", "", "operational listener, plain HTTP: /metrics, /debug/pprof, /health, /ready (for example 127.0.0.1:9090; a loopback address unless PLATFORM_METRICS_TOKEN is set; off when empty)", func(c *Config, v string) error {
			if v == "" {
				c.OpsAddr = ""
				return nil
			}
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("want host:port such as 127.0.0.1:9090")
			}
			c.OpsAddr = v
			return nil
		}},
		{"PLATFORM_MAX_DOCUMENT_ANSWERS", "max-document-answers", "8", "gateway downloads of many documents (GET /api/internal/v1/apis, fetch-batch) served at once; more are answered 503 with Retry-After", setPositive(func(c *Config) *int { return &c.MaxDocumentAnswers })},
		{"PLATFORM_MAX_DOCUMENT_ANSWERS_PER_GATEWAY", "max-document-answers-per-gateway", "2", "the same, for one gateway; more are answered 429 with Retry-After", setPositive(func(c *Config) *int { return &c.MaxDocumentAnswersPerGateway })},
		{"PLATFORM_MAX_GATEWAY_CREATED_APIS", "max-gateway-created-apis", "5000", "APIs one gateway may create through its reports and imports (APIs it created that still exist); beyond it each is refused, naming this setting", setPositive(func(c *Config) *int { return &c.MaxGatewayCreatedAPIs })},
		{"PLATFORM_TRUST_FORWARDED_FOR", "trust-forwarded-for", "false", "take the client address from X-Forwarded-For (only behind a proxy that sets it)", setBool(func(c *Config) *bool { return &c.TrustForwardedFor })},
	}
}

func setString(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *field(c) = v; return nil }
}

func setBool(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		switch strings.ToLower(v) {
		case "1", "true", "on", "yes":
			*field(c) = true
		case "0", "false", "off", "no":
			*field(c) = false
		default:
			return errors.New("want on or off (true or false)")
		}
		return nil
	}
}

func setDuration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return errors.New("want a positive Go duration such as 20s or 1m")
		}
		*field(c) = d
		return nil
	}
}

func setPositive(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errors.New("want a whole number of 1 or more")
		}
		*field(c) = n
		return nil
	}
}

// isLoopbackHost reports whether the host of addr (host:port) is a
// loopback address or localhost; an empty host means every interface.
func isLoopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// parseConfig builds the Config from defaults, then the environment, then the
// flags in args, and validates it. fs may carry extra flags of a subcommand;
// it is parsed here. A bad value is an error naming the setting.
func parseConfig(fs *flag.FlagSet, args []string, getenv func(string) string) (*Config, error) {
	return parseSettings(fs, args, getenv, nil)
}

// parseSettings is parseConfig with flags for the settings named in only
// (flag names), when only is not nil: a command that reads a few settings
// shows and takes just those as flags. Every setting is still read from the
// environment and checked.
func parseSettings(fs *flag.FlagSet, args []string, getenv func(string) string, only []string) (*Config, error) {
	c := &Config{}
	all := settings()
	for _, s := range all {
		if err := s.set(c, s.def); err != nil {
			panic(fmt.Sprintf("default of %s: %v", s.env, err))
		}
	}
	// A bad value in the environment is an error only if no flag of the
	// same setting replaces it: flags win, even over a value that would not
	// parse.
	type envError struct {
		flag string
		err  error
	}
	var envErrs []envError
	for _, s := range all {
		if v := getenv(s.env); v != "" {
			if err := s.set(c, v); err != nil {
				envErrs = append(envErrs, envError{s.flag, fmt.Errorf("%s=%q: %w", s.env, v, err)})
			}
		}
	}
	for _, s := range all {
		if only != nil && !slices.Contains(only, s.flag) {
			continue
		}
		fs.Func(s.flag, fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, s.def), func(v string) error {
			return s.set(c, v)
		})
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, e := range envErrs {
		if !given[e.flag] {
			return nil, e.err
		}
	}
	if c.DBPath == "" {
		c.DBPath = filepath.Join(c.DataDir, "platform.db")
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.DataDir, "encryption.key")
	}
	if c.WSMaxPerOrg == 0 {
		c.WSMaxPerOrg = max(1, c.WSMaxConnections/2)
	}
	if c.WSMaxPerOrg > c.WSMaxConnections {
		return nil, fmt.Errorf("PLATFORM_WS_MAX_CONNECTIONS_PER_ORG (%d) must not exceed PLATFORM_WS_MAX_CONNECTIONS (%d)", c.WSMaxPerOrg, c.WSMaxConnections)
	}
	if c.MetricsToken != "" && len(c.MetricsToken) < minMetricsToken {
		return nil, fmt.Errorf("PLATFORM_METRICS_TOKEN (-metrics-token) must be at least %d characters, so that it cannot be guessed; for example: head -c 24 /dev/urandom | base64", minMetricsToken)
	}
	if c.MaxDocumentAnswersPerGateway > c.MaxDocumentAnswers {
		return nil, fmt.Errorf("PLATFORM_MAX_DOCUMENT_ANSWERS_PER_GATEWAY (%d) must not exceed PLATFORM_MAX_DOCUMENT_ANSWERS (%d)", c.MaxDocumentAnswersPerGateway, c.MaxDocumentAnswers)
	}
	if c.OpsAddr != "" && c.MetricsToken == "" && !isLoopbackHost(c.OpsAddr) {
		return nil, fmt.Errorf("PLATFORM_OPS_ADDR %s is not a loopback address: the operational listener is plain HTTP and, without PLATFORM_METRICS_TOKEN, open to whoever reaches it; listen on 127.0.0.1 or [::1], or set PLATFORM_METRICS_TOKEN", c.OpsAddr)
	}
	if c.HMACSecret != "" && len(c.HMACSecret) < 32 {
		return nil, errors.New("PLATFORM_JWT_HMAC_SECRET (-jwt-hmac-secret) must be at least 32 bytes")
	}
	if c.WSTimeout <= c.WSPingInterval {
		return nil, fmt.Errorf("PLATFORM_WS_TIMEOUT (%s) must be longer than PLATFORM_WS_PING_INTERVAL (%s), or live gateways are dropped", c.WSTimeout, c.WSPingInterval)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("PLATFORM_TLS_CERT and PLATFORM_TLS_KEY must be set together")
	}
	return c, nil
}

// newFlagSet makes a flag set whose usage lists every setting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
