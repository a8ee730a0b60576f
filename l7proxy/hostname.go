package l7proxy

import (
	"errors"
	"net/netip"
	"strings"
)

// maxHostLen is the longest DNS name (RFC 1035 §2.3.4, without the
// trailing dot). A longer Host header cannot name any route.
const maxHostLen = 253

// NormalizeHost turns a Host header value (or a TLS server name) into the
// form routes are keyed by: the port is removed, one trailing dot is
// removed, and ASCII letters are lowercased. IPv6 literals lose their
// brackets ("[FE80::1]:8080" → "fe80::1"), the way url.URL.Hostname does.
// It does not validate: a malformed value simply matches no host rule.
func NormalizeHost(host string) string {
	h := trimHost(host)
	if !hasUpper(h) {
		return h
	}
	var buf [maxHostLen]byte
	if len(h) <= len(buf) {
		return string(appendLower(buf[:0], h))
	}
	return string(appendLower(make([]byte, 0, len(h)), h))
}

// trimHost removes the port, IPv6 brackets and one trailing dot without
// copying, so the request path can use it without allocating.
func trimHost(host string) string {
	if strings.HasPrefix(host, "[") {
		// "[v6]" or "[v6]:port". Without a closing bracket the value is
		// malformed; keep it whole so it matches nothing.
		if i := strings.IndexByte(host, ']'); i > 0 {
			return host[1:i]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		// A second colon means an unbracketed IPv6 literal, which has no
		// port to strip.
		if strings.IndexByte(host, ':') == i {
			host = host[:i]
		}
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	return host
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// appendLower lowercases ASCII only: host names on the wire are ASCII
// (IDNs travel as punycode), and strings.ToLower's Unicode folding could
// make two different byte strings collide.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

var (
	errHostPort     = errors.New("host must not carry a port")
	errHostIP       = errors.New("host must be a DNS name, not an IP address")
	errHostWildcard = errors.New("'*' is only allowed as the whole first label, as in \"*.example.com\"")
	errHostSyntax   = errors.New("host must be a DNS-1123 subdomain: labels of a-z, 0-9 and '-', starting and ending alphanumeric, at most 63 characters each and 253 in all")
)

// routeHost validates and normalizes a Route.Host the way the Ingress API
// validates spec.rules[].host, so YAML read from a directory (which no API
// server has checked) is held to the same rules. Case is forgiven: the
// host is lowercased rather than rejected. It returns the normalized host
// and whether it is a wildcard; for a wildcard the returned host is the
// suffix after "*." — the key the request's host minus its first label is
// looked up by.
func routeHost(host string) (key string, wildcard bool, err error) {
	if host == "" {
		return "", false, nil
	}
	h := strings.ToLower(host)
	if strings.HasPrefix(h, "[") || strings.Count(h, ":") > 1 {
		return "", false, errHostIP
	}
	if strings.Contains(h, ":") {
		return "", false, errHostPort
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return "", false, errHostIP
	}
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		h, wildcard = rest, true
	}
	if strings.Contains(h, "*") {
		return "", false, errHostWildcard
	}
	if !isDNSSubdomain(h) {
		return "", false, errHostSyntax
	}
	return h, wildcard, nil
}

// isDNSSubdomain reports whether s is an RFC 1123 subdomain in lowercase.
func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > maxHostLen {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(label) {
			return false
		}
	}
	return true
}

func isDNSLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
