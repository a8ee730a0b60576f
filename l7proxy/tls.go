package l7proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// certStore picks the certificate for a TLS handshake by SNI. It is
// immutable; a new Config builds a new store, which is how certificates
// rotate without a restart.
type certStore struct {
	exact map[string]*tls.Certificate
	// wildcard is keyed by the parent domain: "*.example.com" is stored
	// under "example.com".
	wildcard map[string]*tls.Certificate
	def      *tls.Certificate
}

// newCertStore indexes certs by host name. When two certificates claim
// the same name the first one in the list wins, so the controller decides
// precedence by ordering. Certificates that cannot be used are reported
// and skipped.
func newCertStore(certs []Certificate, def *tls.Certificate) (*certStore, []error) {
	s := &certStore{
		exact:    make(map[string]*tls.Certificate),
		wildcard: make(map[string]*tls.Certificate),
		def:      def,
	}
	var errs []error
	for _, c := range certs {
		if c.Cert == nil || len(c.Cert.Certificate) == 0 {
			errs = append(errs, fmt.Errorf("certificate %s: empty", c.Source))
			continue
		}
		hosts := c.Hosts
		if len(hosts) == 0 {
			leaf, err := leafOf(c.Cert)
			if err != nil {
				errs = append(errs, fmt.Errorf("certificate %s: %w", c.Source, err))
				continue
			}
			hosts = leaf.DNSNames
			if len(hosts) == 0 && leaf.Subject.CommonName != "" {
				hosts = []string{leaf.Subject.CommonName}
			}
		}
		for _, h := range hosts {
			h = strings.TrimSuffix(strings.ToLower(h), ".")
			m := s.exact
			if parent, ok := strings.CutPrefix(h, "*."); ok {
				m, h = s.wildcard, parent
			}
			if h == "" {
				continue
			}
			if _, dup := m[h]; !dup {
				m[h] = c.Cert
			}
		}
	}
	return s, errs
}

// get returns the certificate for an SNI name: an exact name first, then
// a wildcard covering exactly one extra label, then the default.
func (s *certStore) get(sni string) *tls.Certificate {
	if sni == "" {
		return s.def
	}
	name := strings.TrimSuffix(sni, ".")
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	if c := s.exact[name]; c != nil {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok && parent != "" {
		if c := s.wildcard[parent]; c != nil {
			return c
		}
	}
	return s.def
}

func leafOf(c *tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse leaf certificate: %w", err)
	}
	return leaf, nil
}

// generateDefaultCert makes the self-signed certificate served for
// unknown or missing SNI, as ingress controllers conventionally do. It is
// generated per process: nothing should ever trust it.
func generateDefaultCert(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "nodegress default certificate", Organization: []string{"nodegress"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"nodegress.invalid"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse generated certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ParseCertificate turns the PEM contents of a kubernetes.io/tls Secret
// (tls.crt, tls.key) into a certificate ready to serve. The chain is kept
// in order; the key must match the first (leaf) certificate. Expired
// certificates are accepted, as clients decide what to do with them; the
// caller can inspect Leaf.NotAfter.
func ParseCertificate(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if len(strings.TrimSpace(string(certPEM))) == 0 {
		return nil, errors.New("tls.crt is empty")
	}
	if len(strings.TrimSpace(string(keyPEM))) == 0 {
		return nil, errors.New("tls.key is empty")
	}
	if err := checkPEM(certPEM, "tls.crt", func(t string) bool { return t == "CERTIFICATE" }); err != nil {
		return nil, err
	}
	if err := checkPEM(keyPEM, "tls.key", func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }); err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load key pair: %w", err)
	}
	if c.Leaf == nil {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("parse leaf certificate: %w", err)
		}
		c.Leaf = leaf
	}
	return &c, nil
}

// checkPEM gives a precise error for the common mistakes (a key in
// tls.crt, base64 without PEM armour) that tls.X509KeyPair reports
// vaguely.
func checkPEM(data []byte, name string, want func(string) bool) error {
	rest := data
	var types []string
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if want(b.Type) {
			return nil
		}
		types = append(types, b.Type)
	}
	if len(types) == 0 {
		return fmt.Errorf("%s: no PEM data found", name)
	}
	return fmt.Errorf("%s: no usable PEM block (found %s)", name, strings.Join(types, ", "))
}
