package explain

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// targetKind says what a target names.
type targetKind int

const (
	targetFrontend targetKind = iota // IP:PORT
	targetService                    // namespace/name[:port]
	targetRoute                      // HOST/PATH or a URL
)

type target struct {
	kind     targetKind
	frontend netip.AddrPort
	// service is "namespace/name", port the port's name or number ("":
	// every port).
	service, port string
	host, path    string
	tls           bool
}

// parseTarget tells the three forms apart: an address and port; an http
// or https URL, or HOST/PATH where HOST has a dot (a DNS name or an
// address); otherwise namespace/name[:port], since namespaces have no
// dots. A dotless host is asked for as a URL (http://intranet/).
func parseTarget(s string) (target, error) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if !ap.Addr().Is4() || ap.Port() == 0 {
			return target{}, fmt.Errorf("target %s: want an IPv4 address and a non-zero port", s)
		}
		return target{kind: targetFrontend, frontend: ap}, nil
	}
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return target{}, fmt.Errorf("target %s: not a URL with a host", s)
		}
		return target{kind: targetRoute, host: u.Host, path: pathOrRoot(u.Path), tls: u.Scheme == "https"}, nil
	}
	head, rest, slash := strings.Cut(s, "/")
	if !slash || head == "" {
		return target{}, fmt.Errorf("target %q: want IP:PORT, namespace/name[:port] or HOST/PATH", s)
	}
	if strings.Contains(head, ".") {
		u, err := url.Parse("http://" + s)
		if err != nil {
			return target{}, fmt.Errorf("target %s: %w", s, err)
		}
		return target{kind: targetRoute, host: u.Host, path: pathOrRoot(u.Path)}, nil
	}
	name, port, _ := strings.Cut(rest, ":")
	if name == "" || strings.ContainsAny(name, "/ ") || strings.Contains(port, "/") {
		return target{}, fmt.Errorf("target %q: a service is namespace/name[:port]", s)
	}
	return target{kind: targetService, service: head + "/" + name, port: port}, nil
}

func pathOrRoot(p string) string {
	if p == "" {
		return "/"
	}
	return p
}
