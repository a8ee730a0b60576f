package l7proxy

import (
	"bufio"
	"net/http"
	"net/netip"
	"strings"
)

// forwarded is the X-Forwarded-* set sent upstream with one request,
// decided once by the trust rules here whatever the client side or the
// upstream kind. From an untrusted peer every client-supplied value is
// replaced, so a client cannot forge its address or scheme towards the
// pods. From a trusted proxy the chain is extended and its view of the
// original scheme, host and port is kept. X-Real-Ip is always the proxy's
// own conclusion.
type forwarded struct {
	trusted bool
	// chain holds the X-Forwarded-For values of a trusted peer; the
	// peer's address is appended when sending.
	chain             []string
	proto, host, port string
	fwd               []string // a trusted peer's Forwarded values
	peer, realIP      string
}

// reset starts the set of a new request from connection ci. The value
// strings taken later may be views of the request's buffers.
func (f *forwarded) reset(ci *connInfo) {
	*f = forwarded{trusted: ci.trusted, chain: f.chain[:0], fwd: f.fwd[:0], peer: ci.peerStr}
}

// take records a forwarding field the client sent; only a trusted peer's
// are kept, and of the single-valued ones the first.
func (f *forwarded) take(k hkind, v string) {
	if !f.trusted {
		return
	}
	switch k {
	case hkXFF:
		f.chain = append(f.chain, v)
	case hkXFProto:
		if f.proto == "" {
			f.proto = v
		}
	case hkXFHost:
		if f.host == "" {
			f.host = v
		}
	case hkXFPort:
		if f.port == "" {
			f.port = v
		}
	case hkForwarded:
		f.fwd = append(f.fwd, v)
	}
}

// takeHeader records the forwarding fields of a header map.
func (f *forwarded) takeHeader(h http.Header) {
	if !f.trusted {
		return
	}
	for _, k := range [...]struct {
		name string
		kind hkind
	}{{hdrXFF, hkXFF}, {hdrXFProto, hkXFProto}, {hdrXFHost, hkXFHost}, {hdrXFPort, hkXFPort}, {hdrForwarded, hkForwarded}} {
		for _, v := range h[k.name] {
			f.take(k.kind, v)
		}
	}
}

// complete fills in the proxy's own values where no trusted value was
// taken: the connection's scheme and port and the request's host.
func (f *forwarded) complete(ci *connInfo, host string, trusted []netip.Prefix) {
	if f.proto == "" {
		f.proto = ci.protoVal[0]
	}
	if f.host == "" {
		f.host = host
	}
	if f.port == "" {
		f.port = ci.portVal[0]
	}
	f.realIP = f.peer
	if len(f.chain) > 0 {
		f.realIP = realClient(f.chain, f.peer, trusted)
	}
}

// write writes the set as HTTP/1.1 field lines.
func (f *forwarded) write(w *bufio.Writer) {
	_, _ = w.WriteString("X-Forwarded-For: ")
	for _, v := range f.chain {
		_, _ = w.WriteString(v)
		_, _ = w.WriteString(", ")
	}
	_, _ = w.WriteString(f.peer)
	_, _ = w.WriteString("\r\nX-Real-Ip: ")
	_, _ = w.WriteString(f.realIP)
	_, _ = w.WriteString("\r\nX-Forwarded-Proto: ")
	_, _ = w.WriteString(f.proto)
	_, _ = w.WriteString("\r\nX-Forwarded-Host: ")
	_, _ = w.WriteString(f.host)
	_, _ = w.WriteString("\r\nX-Forwarded-Port: ")
	_, _ = w.WriteString(f.port)
	_, _ = w.WriteString("\r\n")
	writeFieldLines(w, hdrForwarded, f.fwd)
}

// setHeader writes the set into a header map, replacing what the client
// sent.
func (f *forwarded) setHeader(h http.Header) {
	xff := f.peer
	if len(f.chain) > 0 {
		xff = strings.Join(f.chain, ", ") + ", " + f.peer
	}
	h[hdrXFF] = []string{xff}
	h[hdrXRealIP] = []string{f.realIP}
	h[hdrXFProto] = []string{f.proto}
	h[hdrXFHost] = []string{f.host}
	h[hdrXFPort] = []string{f.port}
	if len(f.fwd) > 0 {
		h[hdrForwarded] = append([]string(nil), f.fwd...)
	} else {
		delete(h, hdrForwarded)
	}
}

func writeFieldLines(w *bufio.Writer, k string, vv []string) {
	for _, v := range vv {
		_, _ = w.WriteString(k)
		_, _ = w.WriteString(": ")
		_, _ = w.WriteString(v)
		_, _ = w.WriteString("\r\n")
	}
}
