package benchkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

var placeholder = regexp.MustCompile(`@[A-Z0-9_]+@`)

// Render fills the @NAME@ placeholders of the static config file src with
// vars and writes the result to dst. Values are the harness's own (ports,
// paths it created), never anything from outside. Every placeholder must
// have a value, so a typo fails loudly instead of reaching nginx.
func Render(src, dst string, vars map[string]string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("render %s: %w", src, err)
	}
	out, err := RenderString(string(b), vars)
	if err != nil {
		return fmt.Errorf("render %s: %w", src, err)
	}
	return os.WriteFile(dst, []byte(out), 0o644)
}

// RenderString is Render on a string.
func RenderString(s string, vars map[string]string) (string, error) {
	var missing []string
	out := placeholder.ReplaceAllStringFunc(s, func(p string) string {
		v, ok := vars[strings.Trim(p, "@")]
		if !ok {
			missing = append(missing, p)
			return p
		}
		return v
	})
	if len(missing) > 0 {
		slices.Sort(missing)
		return "", fmt.Errorf("no value for %s", strings.Join(slices.Compact(missing), ", "))
	}
	return out, nil
}

// CertFiles are the paths of a generated certificate.
type CertFiles struct {
	Cert, Key string
	// Bundle is certificate and key in one file, as haproxy wants it.
	Bundle string
}

// WriteCert generates a self-signed ECDSA P-256 certificate for names
// (DNS names, or IP addresses) into dir, in the formats the peers want.
// Every server in a comparison serves this same certificate, so the
// handshake costs the same signature and the same chain size.
func WriteCert(dir string, names ...string) (CertFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CertFiles{}, fmt.Errorf("create certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return CertFiles{}, fmt.Errorf("marshal key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	f := CertFiles{
		Cert:   filepath.Join(dir, "bench.crt"),
		Key:    filepath.Join(dir, "bench.key"),
		Bundle: filepath.Join(dir, "bench.pem"),
	}
	for path, data := range map[string][]byte{
		f.Cert:   certPEM,
		f.Key:    keyPEM,
		f.Bundle: append(slices.Clone(certPEM), keyPEM...),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return CertFiles{}, err
		}
	}
	return f, nil
}
