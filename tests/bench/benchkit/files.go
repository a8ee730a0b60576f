package benchkit

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nodegress/nodegress/tests/harness/testcert"
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

// WriteCert writes an ECDSA P-256 certificate for names (DNS names, or IP
// addresses), issued by a throw-away CA, into dir in the formats the peers
// want. Every server in a comparison serves this same certificate, so the
// handshake costs the same signature and the same chain size.
func WriteCert(dir string, names ...string) (CertFiles, error) {
	ca, err := testcert.NewCA("nodegress bench CA")
	if err != nil {
		return CertFiles{}, err
	}
	leaf, err := ca.Issue(names...)
	if err != nil {
		return CertFiles{}, err
	}
	certPEM, keyPEM := leaf.CertPEM, leaf.KeyPEM
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
