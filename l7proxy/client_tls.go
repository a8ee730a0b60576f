package l7proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
)

// ClientValidation asks a TLS frontend's clients for certificates (mutual
// TLS; the Gateway API's frontend validation). It applies to every
// connection to the frontend, whatever the server name: the certificate
// is asked for in the handshake, before any name is known for sure.
type ClientValidation struct {
	// CAPEM are the certificate authorities client certificates must
	// chain to (PEM).
	CAPEM []byte
	// AllowInsecureFallback asks for a certificate but accepts
	// connections without one, or with one that does not verify.
	AllowInsecureFallback bool
}

// clientAuthConfigs are the TLS configurations of frontends that
// validate clients, by frontend.
type clientAuthConfigs map[netip.AddrPort]*tls.Config

// compileClientAuth derives, for every frontend of a listener with a
// ClientValidation, a configuration from base. A validation whose CAs do
// not parse requires certificates no client can present, rather than
// letting clients in unverified.
func compileClientAuth(ls []Listener, base *tls.Config) (clientAuthConfigs, []error) {
	var errs []error
	out := clientAuthConfigs{}
	for i := range ls {
		l := &ls[i]
		v := l.ClientValidation
		if v == nil {
			continue
		}
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.ClientCAs = x509.NewCertPool()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		if v.AllowInsecureFallback {
			cfg.ClientAuth = tls.RequestClientCert
		}
		if !cfg.ClientCAs.AppendCertsFromPEM(v.CAPEM) {
			errs = append(errs, fmt.Errorf("listener %s: client validation: %w", l.Name, errNoTrustedCA))
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		for _, fe := range l.Frontends {
			out[fe] = cfg
		}
	}
	return out, errs
}
