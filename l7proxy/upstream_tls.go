package l7proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// UpstreamTLS makes the proxy verify an HTTPS upstream's certificate (the
// Gateway API's BackendTLSPolicy). Without it, HTTPS upstreams are
// encrypted to but not verified, as other ingress controllers do by
// default.
type UpstreamTLS struct {
	// ServerName is sent as SNI and, when no SubjectAltNames are given,
	// must be a name of the certificate.
	ServerName string
	// CAPEM are the certificate authorities trusted (PEM); SystemRoots
	// trusts the system's too.
	CAPEM       []byte
	SystemRoots bool
	// DNSNames and URIs, when any is set, replace ServerName in the
	// check: the certificate must carry one of them as a subject
	// alternative name (DNS names may match a wildcard certificate).
	DNSNames []string
	URIs     []string
	// ClientCert, when set, is presented to the upstream (the Gateway
	// API's backend client certificate).
	ClientCert *tls.Certificate
	// SkipVerify presents ClientCert without verifying the upstream
	// (ingress-nginx's proxy-ssl-secret with proxy-ssl-verify off); the
	// fields above but ServerName are then unused.
	SkipVerify bool
	// MaxDepth, when positive, limits the verified chain: at most
	// MaxDepth certificates above the upstream's own, the root included
	// (nginx's proxy_ssl_verify_depth; 1 lets a root sign the
	// certificate directly).
	MaxDepth int
}

func (u *UpstreamTLS) equal(o *UpstreamTLS) bool {
	if u == nil || o == nil {
		return u == o
	}
	return u.ServerName == o.ServerName && bytes.Equal(u.CAPEM, o.CAPEM) && u.SystemRoots == o.SystemRoots &&
		u.SkipVerify == o.SkipVerify && u.MaxDepth == o.MaxDepth &&
		slices.Equal(u.DNSNames, o.DNSNames) && slices.Equal(u.URIs, o.URIs) && sameCertificate(u.ClientCert, o.ClientCert)
}

// sameCertificate compares certificates by their chains (a translation
// parses them anew every time).
func sameCertificate(a, b *tls.Certificate) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.EqualFunc(a.Certificate, b.Certificate, bytes.Equal)
}

var errNoTrustedCA = errors.New("no certificate authority to verify against")

// clientConfig builds the TLS client configuration that enforces u.
func (u *UpstreamTLS) clientConfig() (*tls.Config, error) {
	if u.SkipVerify {
		c := &tls.Config{ServerName: u.ServerName, InsecureSkipVerify: true} //nolint:gosec // asked for
		if u.ClientCert != nil {
			c.Certificates = []tls.Certificate{*u.ClientCert}
		}
		return c, nil
	}
	roots := x509.NewCertPool()
	if u.SystemRoots {
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			return nil, fmt.Errorf("system certificate authorities: %w", err)
		}
	}
	if len(u.CAPEM) > 0 && !roots.AppendCertsFromPEM(u.CAPEM) || len(u.CAPEM) == 0 && !u.SystemRoots {
		return nil, errNoTrustedCA
	}
	var certs []tls.Certificate
	if u.ClientCert != nil {
		certs = []tls.Certificate{*u.ClientCert}
	}
	return &tls.Config{
		ServerName:   u.ServerName,
		Certificates: certs,
		// Verification is done by VerifyConnection: the standard one
		// cannot check subject alternative names other than ServerName.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return u.verify(cs.PeerCertificates, roots)
		},
	}, nil
}

// refusingConfig fails every handshake with err: an upstream whose
// verification cannot be set up is never spoken to unverified.
func refusingConfig(err error) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // every connection is refused
		VerifyConnection:   func(tls.ConnectionState) error { return err },
	}
}

var errChainTooDeep = errors.New("certificate chain longer than the verify depth")

var errSANMismatch = errors.New("certificate has none of the subject alternative names required")

// verify checks the chain against roots and the leaf's names.
func (u *UpstreamTLS) verify(certs []*x509.Certificate, roots *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter}
	if len(u.DNSNames) == 0 && len(u.URIs) == 0 {
		opts.DNSName = u.ServerName
	}
	leaf := certs[0]
	chains, err := leaf.Verify(opts)
	if err != nil {
		return fmt.Errorf("upstream certificate: %w", err)
	}
	if u.MaxDepth > 0 && !slices.ContainsFunc(chains, func(c []*x509.Certificate) bool { return len(c)-1 <= u.MaxDepth }) {
		return fmt.Errorf("upstream certificate: %w (%d)", errChainTooDeep, u.MaxDepth)
	}
	if opts.DNSName != "" {
		return nil
	}
	for _, n := range u.DNSNames {
		if leaf.VerifyHostname(n) == nil {
			return nil
		}
	}
	for _, want := range u.URIs {
		for _, got := range leaf.URIs {
			if got.String() == want {
				return nil
			}
		}
	}
	return errSANMismatch
}
