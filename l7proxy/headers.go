package l7proxy

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"unsafe"
)

// Canonical header keys, used as literal map keys so the hot path does not
// canonicalize.
const (
	hdrXFF       = "X-Forwarded-For"
	hdrXFProto   = "X-Forwarded-Proto"
	hdrXFHost    = "X-Forwarded-Host"
	hdrXFPort    = "X-Forwarded-Port"
	hdrXRealIP   = "X-Real-Ip"
	hdrForwarded = "Forwarded"
)

// connInfo is what the proxy needs to know about a client connection,
// computed once per connection rather than per request. The []string
// fields are shared by every request of the connection as header values;
// nothing writes into header value slices, so sharing them is safe.
type connInfo struct {
	tls  bool
	peer netip.Addr
	// remote is the peer's address and port (for a PROXY header sent
	// upstream).
	remote  netip.AddrPort
	peerStr string
	trusted bool // peer is in Options.TrustedProxies

	// local is the address the client connected to (with sk_lookup
	// steering, the frontend), which selects a Gateway listener.
	local netip.AddrPort
	// sni is the server name a TLS client asked for (lowercase; empty
	// without TLS or SNI).
	sni string
	// alpn is the protocol TLS negotiated ("h2", "http/1.1"; empty
	// without TLS or ALPN).
	alpn string

	peerVal  []string // {peerStr}
	protoVal []string // {"http"} or {"https"}
	portVal  []string // {local port}: the original destination port
}

// newConnInfo describes an accepted connection. Its local address is the
// address the client connected to: with sk_lookup steering, that is the
// frontend, not the listener's own address.
func newConnInfo(c net.Conn, isTLS bool, trusted []netip.Prefix) *connInfo {
	ci := &connInfo{tls: isTLS, protoVal: protoHTTP}
	if isTLS {
		ci.protoVal = protoHTTPS
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		ci.peer = ap.Addr().Unmap()
		ci.remote = netip.AddrPortFrom(ci.peer, ap.Port())
		ci.peerStr = ci.peer.String()
	} else {
		ci.peerStr, _, _ = net.SplitHostPort(c.RemoteAddr().String())
	}
	ci.peerVal = []string{ci.peerStr}
	ci.trusted = inPrefixes(ci.peer, trusted)
	port := "80"
	if isTLS {
		port = "443"
	}
	if ap, err := netip.ParseAddrPort(c.LocalAddr().String()); err == nil {
		ci.local = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		port = strconv.Itoa(int(ap.Port()))
	}
	ci.portVal = []string{port}
	if tc, ok := c.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		ci.sni, ci.alpn = strings.ToLower(cs.ServerName), cs.NegotiatedProtocol
	}
	return ci
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// realClient walks the X-Forwarded-For chain from the right (the hops
// closest to us) and returns the first address that is not a trusted
// proxy: everything left of it could have been made up by the client.
// When every hop is trusted the leftmost is the client. An entry that is
// not an address ends the walk at the last address seen.
func realClient(prior []string, peer string, trusted []netip.Prefix) string {
	last := peer
	for i := len(prior) - 1; i >= 0; i-- {
		line := prior[i]
		for line != "" {
			var item string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				item, line = line[j+1:], line[:j]
			} else {
				item, line = line, ""
			}
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			a, ok := parseForwardedAddr(item)
			if !ok {
				return last
			}
			last = a.String()
			if !inPrefixes(a, trusted) {
				return last
			}
		}
	}
	return last
}

// parseForwardedAddr accepts "1.2.3.4", "2001:db8::1", "1.2.3.4:5678" and
// "[2001:db8::1]:5678".
func parseForwardedAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// hasDotSegment reports whether a (decoded) path contains "." or ".."
// segments. Routing matches the path as sent; a pod that resolves
// "/public/../admin" would otherwise be reached through the "/public"
// route with a path that route never allowed. Such requests are refused.
func hasDotSegment(p string) bool {
	if !strings.Contains(p, "/.") {
		return false
	}
	for p != "" {
		i := strings.IndexByte(p, '/')
		var seg string
		if i < 0 {
			seg, p = p, ""
		} else {
			seg, p = p[:i], p[i+1:]
		}
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// mergeSlashes replaces each run of '/' in a path by one (nginx's
// merge_slashes). Callers check for "//" first, so paths without one cost
// no allocation.
func mergeSlashes(p string) string {
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, p[i])
	}
	return string(b)
}

// isHopByHop reports the fields that describe one connection rather than
// the message (RFC 9110 §7.6.1), by the same classification as the
// HTTP/1.1 parser.
func isHopByHop(k string) bool {
	return classify(unsafe.Slice(unsafe.StringData(k), len(k))).hopByHop()
}

// copyEndToEnd copies the end-to-end headers of src into dst, skipping
// hop-by-hop headers and those the Connection header names. Value slices
// are shared, not copied.
func copyEndToEnd(dst, src http.Header) {
	conn := src["Connection"]
	for k, vv := range src {
		if isHopByHop(k) || len(conn) > 0 && hasToken(conn, k) {
			continue
		}
		dst[k] = vv
	}
}

// hasToken reports whether a comma-separated header value list contains
// token, case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func joinKeys(h http.Header) string {
	var b strings.Builder
	for k := range h {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
	}
	return b.String()
}

// stripPort removes a ":port" suffix from a Host header value, keeping
// IPv6 literals bracketed.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.LastIndexByte(host, ']') > i {
		return host
	}
	return host[:i]
}
