package tlsgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const day = 24 * time.Hour

func ensure(t *testing.T, opts Options) *Result {
	t.Helper()
	res, err := Ensure(opts)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if res.Certificate.Leaf == nil || res.Leaf == nil {
		t.Fatal("Leaf not set")
	}
	return res
}

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func hasIP(ips []net.IP, s string) bool {
	return slices.ContainsFunc(ips, net.ParseIP(s).Equal)
}

func TestGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()
	res := ensure(t, Options{Dir: dir, Hosts: []string{" gw.example.com ", "", "10.1.2.3", "localhost"}})
	if !res.Generated || res.Reason != "missing" {
		t.Fatalf("Generated=%v Reason=%q, want true, missing", res.Generated, res.Reason)
	}
	leaf := res.Leaf
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("ExtKeyUsage %v lacks ServerAuth", leaf.ExtKeyUsage)
	}
	if leaf.IsCA {
		t.Error("certificate is a CA")
	}
	if leaf.Subject.CommonName != "platform-api self-signed" {
		t.Errorf("CommonName %q", leaf.Subject.CommonName)
	}
	for _, n := range []string{"localhost", "gw.example.com"} {
		if !slices.Contains(leaf.DNSNames, n) {
			t.Errorf("DNSNames %v lacks %q", leaf.DNSNames, n)
		}
	}
	if c := strings.Count(strings.Join(leaf.DNSNames, " "), "localhost"); c != 1 {
		t.Errorf("localhost appears %d times in %v", c, leaf.DNSNames)
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.1.2.3"} {
		if !hasIP(leaf.IPAddresses, ip) {
			t.Errorf("IPAddresses %v lacks %s", leaf.IPAddresses, ip)
		}
	}
	if !leaf.NotBefore.Before(now) {
		t.Errorf("NotBefore %v not before now %v", leaf.NotBefore, now)
	}
	if d := leaf.NotAfter.Sub(now); d < 364*day || d > 366*day {
		t.Errorf("NotAfter is %v from now, want about a year", d)
	}
	for path, want := range map[string]os.FileMode{res.KeyFile: 0o600, res.CertFile: 0o644, dir: 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	if filepath.Base(res.CertFile) != "tls-cert.pem" || filepath.Base(res.KeyFile) != "tls-key.pem" {
		t.Errorf("files %s, %s", res.CertFile, res.KeyFile)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (temp files left behind?)", len(entries))
	}
}

func TestReuse(t *testing.T) {
	opts := Options{Dir: t.TempDir(), Hosts: []string{"gw.example.com", "10.1.2.3"}}
	first := ensure(t, opts)
	opts.Hosts = []string{"GW.Example.COM"} // case and a subset must not force a new one
	second := ensure(t, opts)
	if second.Generated || second.Reason != "" {
		t.Fatalf("Generated=%v Reason=%q, want reuse", second.Generated, second.Reason)
	}
	if second.Fingerprint != first.Fingerprint {
		t.Error("fingerprint changed")
	}
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Error("serial changed")
	}
}

func TestReplace(t *testing.T) {
	base := time.Now()
	for _, tc := range []struct {
		name   string
		later  Options
		reason string
	}{
		{"expired", Options{Now: at(base.Add(400 * day))}, "expired"},
		{"expires soon", Options{Now: at(base.Add(340 * day))}, "expires soon"},
		{"still fine", Options{Now: at(base.Add(300 * day))}, ""},
		{"clock went back", Options{Now: at(base.Add(-2 * time.Hour))}, "not yet valid"},
		{"new host", Options{Hosts: []string{"gw.example.com", "api.example.com"}}, "names changed"},
		{"new IP", Options{Hosts: []string{"gw.example.com", "10.9.9.9"}}, "names changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first := ensure(t, Options{Dir: dir, Hosts: []string{"gw.example.com"}, Now: at(base)})
			tc.later.Dir = dir
			if tc.later.Hosts == nil {
				tc.later.Hosts = []string{"gw.example.com"}
			}
			res := ensure(t, tc.later)
			if res.Reason != tc.reason || res.Generated != (tc.reason != "") {
				t.Fatalf("Generated=%v Reason=%q, want reason %q", res.Generated, res.Reason, tc.reason)
			}
			if res.Generated == (res.Fingerprint == first.Fingerprint) {
				t.Errorf("Generated=%v but fingerprint changed=%v", res.Generated, res.Fingerprint != first.Fingerprint)
			}
			// Whatever was written must now be reused at the same time.
			if again := ensure(t, tc.later); again.Generated || again.Fingerprint != res.Fingerprint {
				t.Errorf("not reused after replacement: Reason=%q", again.Reason)
			}
		})
	}
}

// TestUnusablePairRefused: a pair on disk that cannot be used (a file that
// cannot be read, garbage, a key of another certificate, one file of the
// two missing) stops Ensure with an error naming the file and saying what
// to do, and is left as it was; it was replaced by a new pair, changing
// the fingerprint clients pin, with an INFO line only. Tests run as root,
// so a directory in a file's place stands for an unreadable file.
func TestUnusablePairRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, dir string)
		want  string
	}{
		{"CertGarbage", writeFile("tls-cert.pem", "garbage"), "tls-cert.pem and tls-key.pem: tls: failed to find any PEM data in certificate input"},
		{"KeyGarbage", writeFile("tls-key.pem", "garbage"), "tls-cert.pem and tls-key.pem: tls: failed to find any PEM data in key input"},
		{"CertUnreadable", dirInPlaceOf("tls-cert.pem"), "tls-cert.pem: is a directory"},
		{"KeyUnreadable", dirInPlaceOf("tls-key.pem"), "tls-key.pem: is a directory"},
		{"CertMissing", removeFile("tls-cert.pem"), "tls-key.pem exists but tls-cert.pem does not"},
		{"KeyMissing", removeFile("tls-key.pem"), "tls-cert.pem exists but tls-key.pem does not"},
		{"KeyOfAnotherCertificate", func(t *testing.T, dir string) {
			other := ensure(t, Options{Dir: t.TempDir()})
			key, err := os.ReadFile(other.KeyFile)
			if err != nil {
				t.Fatal(err)
			}
			writeFile("tls-key.pem", string(key))(t, dir)
		}, "private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ensure(t, Options{Dir: dir})
			tc.spoil(t, dir)
			before := snapshot(t, dir)
			res, err := Ensure(Options{Dir: dir})
			if err == nil {
				t.Fatalf("Ensure used the spoilt pair: Generated=%v Reason=%q", res.Generated, res.Reason)
			}
			for _, want := range []string{"the TLS pair in " + dir + " cannot be used", tc.want, "remove both tls-cert.pem and tls-key.pem"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if after := snapshot(t, dir); !maps.Equal(after, before) {
				t.Errorf("the directory changed: %v, was %v", after, before)
			}
		})
	}
}

func writeFile(name, content string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func removeFile(name string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func dirInPlaceOf(name string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		removeFile(name)(t, dir)
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot is the directory's entries and the contents of its files.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		m[e.Name()] = string(data)
	}
	return m
}

func TestServesTLS(t *testing.T) {
	res := ensure(t, Options{Dir: t.TempDir()})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{res.Certificate},
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- c.(*tls.Conn).Handshake()
	}()

	pool := x509.NewCertPool()
	pool.AddCert(res.Leaf)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs:    pool,
		ServerName: "localhost",
		MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	defer conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw); got != res.Fingerprint {
		t.Errorf("peer fingerprint %s, want %s", got, res.Fingerprint)
	}
}

func TestFingerprint(t *testing.T) {
	res := ensure(t, Options{Dir: t.TempDir()})
	fp := res.Fingerprint
	if len(fp) != 95 {
		t.Fatalf("len %d, want 95: %s", len(fp), fp)
	}
	for i, c := range fp {
		isHex := c >= '0' && c <= '9' || c >= 'A' && c <= 'F'
		if i%3 == 2 && c != ':' || i%3 != 2 && !isHex {
			t.Fatalf("bad character %q at %d in %s", c, i, fp)
		}
	}
	sum := sha256.Sum256(res.Leaf.Raw)
	if want := strings.ToUpper(hex.EncodeToString(sum[:])); strings.ReplaceAll(fp, ":", "") != want {
		t.Errorf("fingerprint %s does not match sha256 %s", fp, want)
	}
	if Fingerprint(res.Leaf.Raw) != fp {
		t.Error("Fingerprint(Leaf.Raw) differs from Result.Fingerprint")
	}
}
