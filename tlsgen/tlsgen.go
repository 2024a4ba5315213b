// Package tlsgen makes and keeps a self-signed TLS certificate for the
// server, so that it can speak HTTPS out of the box without an operator
// having to provision a certificate first.
//
// Ensure reuses the pair on disk while it is still good for the names the
// server answers to, and replaces it when it is missing (both files),
// expired, about to expire or missing a name. A pair it cannot use, because
// a file cannot be read, does not parse, the key does not match or one of
// the two is missing, is an error: replacing it would change the identity
// clients pin for what may be an operator's mistake (a wrong mode, a bad
// copy). Clients are expected to pin the certificate by its Fingerprint
// rather than trust a CA.
package tlsgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	certFileName = "tls-cert.pem"
	keyFileName  = "tls-key.pem"
	commonName   = "platform-api self-signed"
	validity     = 365 * 24 * time.Hour
	// renewBefore is how long before expiry a certificate is replaced. A
	// restart in the last month renews it, so pinned clients see a change
	// well before the old one stops working rather than an outage.
	renewBefore = 30 * 24 * time.Hour
)

// Options says where the pair lives and what it must name.
type Options struct {
	Dir   string           // directory holding tls-cert.pem and tls-key.pem (created 0700 if missing)
	Hosts []string         // extra names: DNS names or IP literals, in addition to the defaults
	Now   func() time.Time // nil means time.Now
}

// Result is what Ensure returns.
type Result struct {
	Certificate       tls.Certificate   // ready for tls.Config.Certificates; Leaf is set
	Leaf              *x509.Certificate // the parsed certificate
	Fingerprint       string            // SHA-256 of the DER leaf, upper-case hex bytes separated by ':'
	CertFile, KeyFile string            // paths of the PEM files
	Generated         bool              // true when a new pair was written this call
	Reason            string            // why it was (re)generated: "missing", "expired", "expires soon", "names changed", "not yet valid"; empty when reused
}

// Ensure returns the certificate in opts.Dir, first generating and writing a
// new one if neither file exists, or the pair is expired, expiring within 30
// days or does not cover every wanted name. A pair that exists but cannot be
// used (a file unreadable or unparseable, a key that does not match, one file
// of the two missing) is an error, and the files are left as they are.
func Ensure(opts Options) (*Result, error) {
	if opts.Dir == "" {
		return nil, errors.New("tlsgen: Options.Dir is empty")
	}
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("tlsgen: %w", err)
	}
	res := &Result{
		CertFile: filepath.Join(opts.Dir, certFileName),
		KeyFile:  filepath.Join(opts.Dir, keyFileName),
	}
	dns, ips := wantedNames(opts.Hosts)
	cert, reason, err := load(res.CertFile, res.KeyFile, dns, ips, now)
	if err != nil {
		return nil, fmt.Errorf("tlsgen: the TLS pair in %s cannot be used: %w; restore or fix it (the key must match the certificate), "+
			"or remove both %s and %s to have a new self-signed pair made (clients pinning the old fingerprint must then pin the new one)",
			opts.Dir, err, certFileName, keyFileName)
	}
	if reason != "" {
		if cert, err = generate(res.CertFile, res.KeyFile, dns, ips, now); err != nil {
			return nil, fmt.Errorf("tlsgen: %w", err)
		}
		res.Generated, res.Reason = true, reason
	}
	res.Certificate, res.Leaf = cert, cert.Leaf
	res.Fingerprint = Fingerprint(cert.Leaf.Raw)
	return res, nil
}

// Fingerprint returns the SHA-256 fingerprint of a DER certificate as
// upper-case hex bytes separated by ':' (the format browsers and openssl show).
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// wantedNames returns the default names plus extra, deduplicated and split
// into DNS names and IP addresses.
func wantedNames(extra []string) (dns []string, ips []net.IP) {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	seen := map[string]bool{}
	for _, n := range append(names, extra...) {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		ip := net.ParseIP(n)
		key := strings.ToLower(n) // DNS names are case-insensitive
		if ip != nil {
			key = ip.String() // so "::0001" and "::1" are the same
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		if ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// load reads the pair on disk and returns it with an empty reason if it can
// be reused, or the reason it must be replaced: "missing" when neither file
// exists. A pair that exists and cannot be used is an error.
func load(certFile, keyFile string, dns []string, ips []net.IP, now time.Time) (tls.Certificate, string, error) {
	certPEM, err1 := os.ReadFile(certFile)
	keyPEM, err2 := os.ReadFile(keyFile)
	certMissing, keyMissing := errors.Is(err1, os.ErrNotExist), errors.Is(err2, os.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		return tls.Certificate{}, "missing", nil
	case certMissing:
		return tls.Certificate{}, "", fmt.Errorf("%s exists but %s does not", keyFileName, certFileName)
	case keyMissing:
		return tls.Certificate{}, "", fmt.Errorf("%s exists but %s does not", certFileName, keyFileName)
	}
	if err := errors.Join(err1, err2); err != nil {
		return tls.Certificate{}, "", err // *PathError: names the file
	}
	// X509KeyPair also checks that the key matches the certificate.
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err == nil && cert.Leaf == nil {
		cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
	}
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("%s and %s: %w", certFileName, keyFileName, err)
	}
	leaf := cert.Leaf
	switch {
	case !now.Before(leaf.NotAfter):
		return cert, "expired", nil
	case leaf.NotAfter.Sub(now) < renewBefore:
		return cert, "expires soon", nil
	case now.Before(leaf.NotBefore):
		// The clock went backwards; clients would reject it too.
		return cert, "not yet valid", nil
	}
	for _, n := range dns {
		if !slices.ContainsFunc(leaf.DNSNames, func(s string) bool { return strings.EqualFold(s, n) }) {
			return cert, "names changed", nil
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return cert, "names changed", nil
		}
	}
	return cert, "", nil
}

// generate creates a new key and self-signed certificate and writes both.
func generate(certFile, keyFile string, dns []string, ips []net.IP, now time.Time) (tls.Certificate, error) {
	// P-256 ECDSA: small, fast and accepted by every TLS 1.2+ client.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, err
	}
	// Setting the top bit keeps it exactly 128 bits and never zero, which
	// RFC 5280 forbids.
	serial.SetBit(serial, 127, 1)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		// Backdated an hour so clients with a slightly slow clock accept it.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature, // ECDSA has no key encipherment
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeAtomic(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeAtomic(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// writeAtomic writes data to a temporary file in the same directory and
// renames it over path, so a crash never leaves a half-written file. The
// temporary file is created 0600 (os.CreateTemp opens it with os.OpenFile and
// that mode), so the key is never readable by others, even for a moment.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // explicit, so the umask cannot change it
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
