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

// frontendTLSConfigs are the TLS configurations of frontends that need
// their own, by frontend.
type frontendTLSConfigs map[netip.AddrPort]*tls.Config

// compileFrontendTLS derives from base the configuration of every
// frontend that needs its own: one whose listeners validate client
// certificates, and one terminating TLS streams, which must not
// negotiate an application protocol by ALPN (the stream goes to the
// backend as it comes, whatever the client offered). A validation whose
// CAs do not parse requires certificates no client can present, rather
// than letting clients in unverified.
func compileFrontendTLS(ls []Listener, base *tls.Config) (frontendTLSConfigs, []error) {
	var errs []error
	out := frontendTLSConfigs{}
	for i := range ls {
		l := &ls[i]
		v := l.ClientValidation
		if v == nil && l.Kind != ListenerTLSTerminate {
			continue
		}
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		if l.Kind == ListenerTLSTerminate {
			cfg.NextProtos = nil
		}
		if v != nil {
			cfg.ClientCAs = x509.NewCertPool()
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			if v.AllowInsecureFallback {
				cfg.ClientAuth = tls.RequestClientCert
			}
			if !cfg.ClientCAs.AppendCertsFromPEM(v.CAPEM) {
				errs = append(errs, fmt.Errorf("listener %s: client validation: %w", l.Name, errNoTrustedCA))
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
			}
		}
		for _, fe := range l.Frontends {
			out[fe] = cfg
		}
	}
	return out, errs
}
