package cp

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/nodegress/nodegress/tests/internal/pki"
)

// credentials is what the API server needs to serve TLS, authenticate the admin by
// client certificate and sign ServiceAccount tokens. It lives only as long
// as the test, so keys are ECDSA P-256 (fast to make) and never reused.
type credentials struct {
	caPEM []byte
	// adminCertPEM and adminKeyPEM identify a member of system:masters.
	adminCertPEM, adminKeyPEM []byte
	// Files handed to kube-apiserver.
	caFile, certFile, keyFile, saKeyFile, saPubFile string
}

// newPKI writes a CA, a serving certificate for ips and the in-cluster
// names, an admin client certificate and a ServiceAccount signing key pair
// into dir.
func newPKI(dir string, ips []netip.Addr) (*credentials, error) {
	now := time.Now()
	// Valid from an hour back so a slightly skewed clock still accepts it.
	notBefore, notAfter := now.Add(-time.Hour), now.Add(7*24*time.Hour)

	ca, err := pki.NewCA("nodegress-test-ca", notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	caKey, caCert, caDER := ca.Key, ca.Cert, ca.DER

	srvKey, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// The names in-cluster clients use for the "kubernetes" Service.
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	}
	for _, ip := range ips {
		srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	srvDER, _, err := pki.Sign(srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}

	admKey, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	admTmpl := &x509.Certificate{
		// The API server maps CN to the user and O to its groups.
		Subject:     pkix.Name{CommonName: AdminUser, Organization: []string{"system:masters"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	admDER, _, err := pki.Sign(admTmpl, caCert, &admKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}

	saKey, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("service account public key: %w", err)
	}

	p := &credentials{
		caPEM:        pki.PEM("CERTIFICATE", caDER),
		adminCertPEM: pki.PEM("CERTIFICATE", admDER),
		caFile:       filepath.Join(dir, "ca.crt"),
		certFile:     filepath.Join(dir, "apiserver.crt"),
		keyFile:      filepath.Join(dir, "apiserver.key"),
		saKeyFile:    filepath.Join(dir, "sa.key"),
		saPubFile:    filepath.Join(dir, "sa.pub"),
	}
	if p.adminKeyPEM, err = pki.KeyPEM(admKey); err != nil {
		return nil, err
	}
	srvKeyPEM, err := pki.KeyPEM(srvKey)
	if err != nil {
		return nil, err
	}
	saKeyPEM, err := pki.KeyPEM(saKey)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path string
		data []byte
	}{
		{p.caFile, p.caPEM},
		{p.certFile, pki.PEM("CERTIFICATE", srvDER)},
		{p.keyFile, srvKeyPEM},
		{p.saKeyFile, saKeyPEM},
		{p.saPubFile, pki.PEM("PUBLIC KEY", saPub)},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return p, nil
}
