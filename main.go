// Command platform-api is the control plane for a fleet of API gateways: one
// static binary serving the REST API and the gateways' WebSocket channel over
// TLS, with its state in SQLite.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"platform-api/auth"
	"platform-api/hub"
	"platform-api/server"
	"platform-api/simulate"
	"platform-api/store"
	"platform-api/tlsgen"
)

// version is set at build time with -ldflags "-X main.version=..."; when it is
// not, the VCS revision from the build info is used.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -help printed the usage; that is success
		}
		fmt.Fprintln(os.Stderr, "platform-api:", err)
		os.Exit(1)
	}
}

// run is the whole program; main only gives it the process's context,
// arguments, environment and output.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if !slices.Contains(commandNames, args[0]) {
			return fmt.Errorf("unknown command %q; the commands are %s (platform-api help describes them)", args[0], strings.Join(commandNames, ", "))
		}
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help":
		if len(args) > 0 && args[0] != "help" {
			// platform-api help <command>: that command's own usage.
			err := run(ctx, []string{args[0], "-h"}, getenv, stdout, stdout)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		fmt.Fprint(stdout, commandsHelp)
		return nil
	case "version":
		fmt.Fprintln(stdout, "platform-api", buildVersion())
		return nil
	case "token":
		return runToken(args, getenv, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args, getenv, stdout, stderr)
	case "load":
		return runLoad(ctx, args, getenv, stdout, stderr)
	}
	fs := newFlagSet("platform-api [serve]", stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: platform-api [serve] [flags]\n\nRuns the server. Every flag can also be set by the environment variable shown (flags win).\nOther commands: token, simulate, load, version (platform-api help lists them).\n\n")
		fs.PrintDefaults()
	}
	cfg, err := parseConfig(fs, args, getenv)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stdout, newLogger(cfg, stderr))
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		// Durations as "1.5s", as the text format writes them, not as
		// nanoseconds.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func signingKeyPath(cfg *Config) string { return filepath.Join(cfg.DataDir, "jwt-signing-key.pem") }

// commandNames are the commands run knows, in the order help lists them.
var commandNames = []string{"serve", "token", "simulate", "load", "version", "help"}

// commandsHelp is what platform-api help prints.
const commandsHelp = `platform-api is the control plane of a fleet of API gateways.

Usage: platform-api [command] [flags]

Commands:
  serve      run the server (the command when none is given); its flags are every setting
  token      print a JWT for an organization, signed with the server's own key
  simulate   play a fleet of gateways against a running server and report
  load       measure the REST API of a running server
  version    print the version
  help       print this list; platform-api help <command> shows that command's flags

Each command's -h shows its own flags.
`

// tokenSettings are the server settings the token command reads: where the
// signing key is, and the claims the server requires.
var tokenSettings = []string{"data-dir", "jwt-issuer", "jwt-audience", "jwt-local-key"}

// runToken prints a JWT signed with the server's own key, for curl.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("platform-api token", stderr)
	org := fs.String("org", "", "organization UUID to put in the token (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	sub := fs.String("sub", "admin", "subject (who the token is for)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: platform-api token -org <uuid> [-ttl 1h] [-sub name] [-data-dir ./data]\n\nPrints a JWT for the organization, signed with the key in the server's data directory\n(made on first use): run it with the server's data directory.\n\n")
		fs.PrintDefaults()
	}
	cfg, err := parseSettings(fs, args, getenv, tokenSettings)
	if err != nil {
		return err
	}
	if _, err := uuid.Parse(*org); err != nil || len(*org) != 36 {
		return errors.New("-org must be an organization UUID, for example -org " + uuid.NewString())
	}
	if *ttl <= 0 || *ttl > 366*24*time.Hour {
		return errors.New("-ttl must be positive and at most a year")
	}
	if !cfg.JWTLocalKey {
		fmt.Fprintln(stderr, "warning: PLATFORM_JWT_LOCAL_KEY is off, so the server will not accept this token")
	}
	key, err := auth.LoadOrCreateSigningKey(signingKeyPath(cfg))
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	tok, err := auth.MintToken(key, auth.TokenRequest{
		OrganizationID: *org, Subject: *sub, TTL: *ttl, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// runSimulate plays a fleet of gateways against a running server.
func runSimulate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("platform-api simulate", stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: platform-api simulate -target https://host:8443[,https://host2:8443] [flags]\n\nPlays a fleet of gateways against a running server and reports.\n\n")
		fs.PrintDefaults()
	}
	var o simulate.Options
	fs.StringVar(&o.Target, "target", "https://localhost:8443", "base URL of the platform-api to play against; several, comma-separated, for replicas of one server: the fleet is spread across them, deployments go through them in turn, and gateways whose replica goes away move to the next")
	fs.BoolVar(&o.Insecure, "insecure", false, "skip TLS certificate verification (self-signed servers)")
	fs.StringVar(&o.Token, "token", getenv("PLATFORM_TOKEN"), "bearer JWT of the organization to use (env PLATFORM_TOKEN)")
	fs.IntVar(&o.Gateways, "gateways", 100, "number of gateways in the fleet")
	fs.IntVar(&o.Deploys, "deploys", 5, "number of deployments to the whole fleet")
	fs.Float64Var(&o.Churn, "churn", 0, "fraction of gateways that drop and reconnect around each deployment (0 to 1)")
	fs.IntVar(&o.Concurrency, "concurrency", 64, "parallel registrations and connection attempts")
	fs.DurationVar(&o.Wait, "wait", 2*time.Minute, "how long one deployment may take to converge")
	fs.DurationVar(&o.Hold, "hold", 0, "keep the fleet connected this long after the deployments (to watch server memory or /metrics, or, with several targets, kill a replica and watch its gateways move); an interrupt ends it with the report")
	fs.BoolVar(&o.Keep, "keep", false, "keep the project, API and gateways the run created")
	fs.IntVar(&o.Generation, "generation", 1, "gateway generation to play: 1, or 2 (manifest, performedAt rule, RestApi documents, acknowledgements)")
	fs.IntVar(&o.APIs, "apis", 1, "APIs to create; deployments go to the first. Above 1, each is deployed to the whole fleet before it connects, and the run measures the fleet converging on them as it connects and after every gateway reconnects")
	fs.IntVar(&o.Keys, "keys", 0, "with -generation 2: API keys to create on the deployed API; part of the fleet (-churn) goes away while a quarter are regenerated, a quarter revoked and a tenth more created, and the report says whether every gateway holds exactly the current set")
	fs.DurationVar(&o.AckWait, "ack-wait", 10*time.Second, "with -generation 2, how long each deploy request waits for the acknowledgements (?wait=, at most 60s)")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "process id of the server, when it runs on this machine: the report adds its CPU time per deployment and its memory (Linux)")
	waves := fs.String("rollout", "", "after the deployments, roll a new revision out to the whole fleet in these waves (cumulative percentages, such as 1,10,50,100) and report where it ended")
	fs.Float64Var(&o.Fail, "fail", 0, "with -rollout and -generation 2, the fraction of the fleet that acknowledges failure (every 1/fail-th gateway, the first included)")
	fs.IntVar(&o.MaxFailures, "max-failures", 0, "with -rollout, the rollout's maxFailures")
	fs.DurationVar(&o.RolloutPause, "pause", 0, "with -rollout, the rollout's pause between waves")
	fs.DurationVar(&o.WaveTimeout, "wave-timeout", time.Minute, "with -rollout, the rollout's waveTimeout")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.Rollout, err = simulate.ParseWaves(*waves); err != nil {
		return err
	}
	o.Progress = stderr
	rep, err := simulate.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.WriteTable(stdout)
	return nil
}

// runLoad measures the REST API of a running server from this process.
func runLoad(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("platform-api load", stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: platform-api load -target https://host:8443 [flags]\n\nMeasures the REST API of a running server from this process.\n\n")
		fs.PrintDefaults()
	}
	var o simulate.LoadOptions
	fs.StringVar(&o.Target, "target", "https://localhost:8443", "base URL of the platform-api to measure")
	fs.BoolVar(&o.Insecure, "insecure", false, "skip TLS certificate verification (self-signed servers)")
	fs.StringVar(&o.Token, "token", getenv("PLATFORM_TOKEN"), "bearer JWT of the organization to use (env PLATFORM_TOKEN)")
	fs.StringVar(&o.Scenario, "scenario", "all", "create (APIs of 10 operations and 2 backends), list (a page of 100 APIs), get (one API), all: create, list at offset 0, list of the last page, get (what create made is deleted before the lists, unless -keep), or keys: a page of 100 keys, a gateway's key pull (every API deployed to it), key creates")
	fs.IntVar(&o.Clients, "clients", 8, "concurrent clients, each with one request in flight")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time of each phase")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "time before each phase's measurement, not counted")
	fs.IntVar(&o.APIs, "apis", 1000, "list, get and keys: APIs the project holds; the missing ones are created first")
	fs.IntVar(&o.Offset, "offset", 0, "list: offset of the page read")
	fs.IntVar(&o.KeysPerAPI, "keys-per-api", 10, "keys: API keys created on each of the -apis APIs before measuring")
	fs.StringVar(&o.Project, "project", "", "list and get: id of an existing project to read (and fill up to -apis) instead of a new one; create alone: the project to write to")
	fs.BoolVar(&o.Keep, "keep", false, "keep the projects and APIs the run created")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Progress = stderr
	rep, err := simulate.Load(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.WriteTable(stdout)
	return nil
}

// serve runs the server until ctx is done, then shuts down in order: stop
// accepting, let in-flight requests finish within the timeout, close the
// database.
func serve(ctx context.Context, cfg *Config, stdout io.Writer, log *slog.Logger) error {
	// What can be checked without writing anything is checked first: the
	// port is bound and the database answers before the data directory,
	// the TLS pair or the encryption key is made, so a start that fails on
	// them (port in use, wrong database URL) leaves nothing behind.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("PLATFORM_ADDR: %w", err)
	}
	defer ln.Close() // on a failed start; Shutdown closes it otherwise
	if err := store.Probe(ctx, cfg.DBPath, cfg.DataDir); err != nil {
		return fmt.Errorf("PLATFORM_DB %s: %w", store.RedactedDSN(cfg.DBPath), err)
	}
	if err := ensurePrivateDir(cfg.DataDir, log); err != nil {
		return err
	}
	// One process per SQLite data directory, locked before anything is
	// written there. PostgreSQL replicas share a database on purpose; each
	// has a data directory of its own, and its replica id is locked there.
	if !store.IsPostgres(cfg.DBPath) {
		release, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer release()
	}
	cert, err := loadCertificate(cfg, log)
	if err != nil {
		return err
	}
	sealer, created, err := store.LoadOrCreateKeyFile(cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("PLATFORM_ENCRYPTION_KEY_FILE: %w", err)
	}
	if store.IsPostgres(cfg.DBPath) {
		if cfg.ReplicaID == "" {
			id, release, err := replicaID(cfg.DataDir)
			if err != nil {
				return err
			}
			defer release()
			cfg.ReplicaID = id
		}
		log = log.With("replica", cfg.ReplicaID)
	}
	db, err := store.Open(ctx, store.Config{DSN: cfg.DBPath, MaxConns: cfg.DBMaxConns, Sealer: sealer, KeepRevisions: cfg.KeepRevisions,
		MaxGatewayCreatedAPIs: cfg.MaxGatewayCreatedAPIs, Log: log, AckTimeout: cfg.DeployAckTimeout, TombstoneRetention: cfg.TombstoneRetention,
		ReplicaID: cfg.ReplicaID, Lease: cfg.ReplicaLease})
	if err != nil {
		return fmt.Errorf("PLATFORM_DB %s: %w", store.RedactedDSN(cfg.DBPath), err)
	}
	defer db.Close()
	if created {
		// Said once the database has taken the key, not before a start
		// that may still fail.
		log.Warn("new encryption key made for secrets at rest: back it up with the database, which cannot be read without it", "file", cfg.KeyFile, "key", sealer.KeyID())
	}

	authCfg := auth.Config{
		JWKS:               cfg.JWKS,
		HMACSecret:         []byte(cfg.HMACSecret),
		Issuer:             cfg.JWTIssuer,
		Audience:           cfg.JWTAudience,
		InsecureSkipVerify: cfg.JWTInsecure,
	}
	if cfg.JWTLocalKey {
		if authCfg.LocalKey, err = auth.LoadOrCreateSigningKey(signingKeyPath(cfg)); err != nil {
			return fmt.Errorf("JWT signing key: %w", err)
		}
		// Replicas trust each other's own keys through the database.
		if err := db.RegisterSigningKey(ctx, auth.LocalKeyID(authCfg.LocalKey), auth.PublicKeyPEM(authCfg.LocalKey)); err != nil {
			return fmt.Errorf("register the JWT signing key: %w", err)
		}
		authCfg.PeerKey = db.SigningKey
	}
	authn, err := auth.New(ctx, authCfg, log)
	if err != nil {
		return err
	}
	handler := server.New(server.Options{
		Store:        db,
		Auth:         authn,
		Logger:       log,
		MaxBodyBytes: cfg.MaxBodyBytes,
		CORSOrigins:  cfg.CORSOrigins,
		Hub: hub.Config{
			PingInterval:   cfg.WSPingInterval,
			Timeout:        cfg.WSTimeout,
			MaxConnections: cfg.WSMaxConnections,
			MaxPerOrg:      cfg.WSMaxPerOrg,
			MaxPerGateway:  cfg.WSMaxPerGateway,
		},
		GenerationGrace:      cfg.GenerationGrace,
		DeliveryWait:         cfg.DeliveryWait,
		WSRateLimitPerMinute: cfg.WSRateLimitPerMinute,
		TrustForwardedFor:    cfg.TrustForwardedFor,
		MetricsToken:         cfg.MetricsToken,
		Version:              buildVersion(),

		MaxDocumentAnswers:           cfg.MaxDocumentAnswers,
		MaxDocumentAnswersPerGateway: cfg.MaxDocumentAnswersPerGateway,
		MaxOpenAPIBytes:              cfg.MaxOpenAPIBytes,
	})

	srv := &http.Server{
		Handler: handler,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
		},
		// A client gets ReadHeaderTimeout for its TLS handshake and headers,
		// so slow or silent connections cannot hold goroutines for long; a
		// whole request body (at most PLATFORM_MAX_BODY_BYTES) gets a minute,
		// and so does writing an answer. Gateway connections clear these
		// deadlines when they are upgraded.
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	log.Info("platform-api started", "version", buildVersion(), "addr", ln.Addr().String(), "url", "https://"+ln.Addr().String(),
		"db", store.RedactedDSN(cfg.DBPath))
	if cfg.LogFormat != "json" {
		// For people and scripts reading the text output; with JSON logs,
		// the record above says it, and nothing else is written as text.
		fmt.Fprintf(stdout, "platform-api listening on https://%s\n", ln.Addr())
	}

	errc := make(chan error, 2)
	go func() { errc <- srv.ServeTLS(httpsOnlyListener{ln}, "", "") }()
	// The operational listener: metrics and profiles, which the public
	// port serves only with PLATFORM_METRICS_TOKEN. Plain HTTP: it listens
	// on loopback unless a token guards it (parseConfig).
	var opsSrv *http.Server
	if cfg.OpsAddr != "" {
		opsLn, err := net.Listen("tcp", cfg.OpsAddr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("PLATFORM_OPS_ADDR: %w", err)
		}
		// No write timeout: a CPU profile or a trace runs for its ?seconds=.
		opsSrv = &http.Server{
			Handler:           handler.Ops(),
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		}
		log.Info("operational listener started", "addr", opsLn.Addr().String())
		if cfg.LogFormat != "json" {
			fmt.Fprintf(stdout, "platform-api operational endpoints on http://%s\n", opsLn.Addr())
		}
		go func() { errc <- fmt.Errorf("operational listener: %w", opsSrv.Serve(opsLn)) }()
	}
	select {
	case err := <-errc:
		srv.Close()
		if opsSrv != nil {
			opsSrv.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	handler.SetShuttingDown() // /ready answers 503 from now on
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// http.Server.Shutdown does not touch hijacked connections: each gateway
	// gets its 1001 close frame from the hub, which waits for its goroutines.
	// Both run at once, so a slow request cannot use up the gateways' time.
	hubDone := make(chan error, 1)
	go func() { hubDone <- handler.Hub().Shutdown(sctx) }()
	opsDone := make(chan struct{})
	go func() {
		defer close(opsDone)
		if opsSrv != nil && opsSrv.Shutdown(sctx) != nil {
			opsSrv.Close() // a profile still running
		}
	}()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests did not finish in time", "err", err)
		srv.Close()
	}
	<-opsDone
	if err := <-hubDone; err != nil {
		log.Warn("gateway connections did not close in time", "err", err)
	}
	handler.Close()
	log.Info("stopped")
	return nil
}

// loadCertificate loads the configured pair or makes (and keeps) a
// self-signed one in the data directory.
func loadCertificate(cfg *Config, log *slog.Logger) (tls.Certificate, error) {
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return cert, fmt.Errorf("PLATFORM_TLS_CERT/PLATFORM_TLS_KEY: %w", err)
		}
		log.Info("TLS certificate loaded", "file", cfg.TLSCert, "sha256", tlsgen.Fingerprint(cert.Certificate[0]))
		return cert, nil
	}
	res, err := tlsgen.Ensure(tlsgen.Options{Dir: cfg.DataDir, Hosts: cfg.TLSHosts})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	if res.Generated {
		log.Info("self-signed TLS certificate generated", "reason", res.Reason, "file", res.CertFile,
			"expires", res.Leaf.NotAfter, "sha256", res.Fingerprint)
	} else {
		log.Info("self-signed TLS certificate reused", "file", res.CertFile, "expires", res.Leaf.NotAfter, "sha256", res.Fingerprint)
	}
	return res.Certificate, nil
}

// ensurePrivateDir makes the data directory with mode 0700, or takes group
// and other permissions away from an existing one, saying so; a directory
// that cannot be made private stops the start.
func ensurePrivateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("PLATFORM_DATA_DIR: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("PLATFORM_DATA_DIR: %w", err)
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		if err := os.Chmod(dir, mode&0o700); err != nil {
			return fmt.Errorf("PLATFORM_DATA_DIR %s is readable by others (mode %o) and could not be made private: %w", dir, mode, err)
		}
		log.Warn("data directory was readable by others: made private", "dir", dir, "was", fmt.Sprintf("%o", mode), "now", fmt.Sprintf("%o", mode&0o700))
	}
	return nil
}
