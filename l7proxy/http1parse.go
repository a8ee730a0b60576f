package l7proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// This file is the proxy's HTTP/1.1 message parser. It is strict on
// what clients send, because a proxy that frames a message differently
// from the server behind it (or from a proxy in front of it) lets a client
// smuggle a second request past routing and access control. The rules,
// each answered with 400 Bad Request unless noted:
//
//   - Every line ends in CRLF; a bare LF anywhere in the head or in chunked
//     framing is refused (RFC 9112 §2.2 allows accepting it; accepting it is
//     what makes LF-only smuggling work against CRLF-only peers).
//   - Request line: a token method, one SP, a target without control
//     characters, spaces or '#', one SP, "HTTP/1.0" or "HTTP/1.1" (other
//     1.x minors are read as 1.1; another major version gets 505).
//   - Field names are tokens immediately followed by ':' (no whitespace
//     before the colon); values have no control characters other than HTAB;
//     a line starting with whitespace (obs-fold) is refused.
//   - Content-Length: exactly one field, 1 to 18 digits, nothing else (no
//     sign, list or inner whitespace). A repeated Content-Length is refused
//     even when the values agree.
//   - Transfer-Encoding: exactly one field whose value is "chunked", not
//     together with Content-Length, never in an HTTP/1.0 request.
//   - Host: exactly one in HTTP/1.1, with no characters outside a host name,
//     IP literal and port.
//   - Chunk sizes are 1 to 16 hex digits; chunk extensions are skipped;
//     request trailers are read and dropped.
//   - The head (request line and fields) is at most Options.MaxHeaderBytes:
//     431 beyond.
//   - Expect other than "100-continue": 417.
//
// Responses from upstreams are read with the same rules except that a bare
// LF ends a line, as many small servers send one.

// rbuf is a connection's read buffer. Unlike bufio.Reader it hands out
// slices of its buffer instead of copying, lets a message head grow the
// buffer up to a limit, and reads from the connection only when the caller
// asks it to (after flushing what it has to send).
type rbuf struct {
	conn net.Conn
	buf  []byte
	r, w int
	// max is the size the buffer may grow to for a long head.
	max int
	// timeout, when positive, is set as the read deadline before each read:
	// an upstream must make progress at least that often.
	timeout time.Duration
	// deadline, when set, becomes the read deadline before the next read
	// (and is then cleared): a request head that arrives in one read costs
	// no deadline update.
	deadline time.Time
}

var errBufferFull = errors.New("read buffer full")

func (b *rbuf) buffered() int { return b.w - b.r }

// bytes returns the buffered data without consuming it.
func (b *rbuf) bytes() []byte { return b.buf[b.r:b.w] }

// fill reads from the connection once, making room first.
func (b *rbuf) fill() error {
	switch {
	case b.r == b.w:
		b.r, b.w = 0, 0
	case b.w == len(b.buf):
		switch {
		case b.r > 0:
			b.w = copy(b.buf, b.buf[b.r:b.w])
			b.r = 0
		case len(b.buf) < b.max:
			nb := make([]byte, min(2*len(b.buf), b.max))
			b.w = copy(nb, b.buf[:b.w])
			b.buf = nb
		default:
			return errBufferFull
		}
	}
	if b.timeout > 0 {
		_ = b.conn.SetReadDeadline(time.Now().Add(b.timeout))
	} else if !b.deadline.IsZero() {
		_ = b.conn.SetReadDeadline(b.deadline)
		b.deadline = time.Time{}
	}
	n, err := b.conn.Read(b.buf[b.w:])
	b.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// h1Error is a malformed message, with the status a client gets for it.
type h1Error struct {
	status int
	msg    string
}

func (e *h1Error) Error() string { return e.msg }

func badRequest(msg string) *h1Error { return &h1Error{status: http.StatusBadRequest, msg: msg} }

var (
	errHeadTooLarge   = &h1Error{status: http.StatusRequestHeaderFieldsTooLarge, msg: "message head too large"}
	errBareLF         = badRequest("line not terminated by CRLF")
	errEmptyLines     = badRequest("too many empty lines before the request line")
	errRequestLine    = badRequest("malformed request line")
	errMethod         = badRequest("invalid method")
	errTarget         = badRequest("invalid request target")
	errVersion        = &h1Error{status: http.StatusHTTPVersionNotSupported, msg: "unsupported HTTP version"}
	errFieldName      = badRequest("invalid header field name")
	errFieldValue     = badRequest("invalid header field value")
	errObsFold        = badRequest("obsolete line folding")
	errSpaceColon     = badRequest("whitespace between header field name and colon")
	errHost           = badRequest("missing, repeated or invalid Host")
	errContentLength  = badRequest("invalid or repeated Content-Length")
	errTransferEnc    = badRequest("unsupported or repeated Transfer-Encoding")
	errCLAndTE        = badRequest("both Content-Length and Transfer-Encoding")
	errExpect         = &h1Error{status: http.StatusExpectationFailed, msg: "unsupported expectation"}
	errChunkSize      = badRequest("invalid chunk size line")
	errChunkData      = badRequest("chunk data not followed by CRLF")
	errTrailer        = badRequest("invalid trailer section")
	errStatusLine     = errors.New("malformed status line")
	errResponseFields = errors.New("malformed response header")
	errResponseFrame  = errors.New("invalid response framing")
)

// maxEmptyLines bounds the empty lines skipped before a request line
// (RFC 9112 §2.2: robustness for clients that send CRLF after a body).
const maxEmptyLines = 4

// readHead returns the next message head: start line and header fields up
// to and including the empty line, consuming it. The slice points into the
// buffer and is valid until the next fill. A head longer than limit is
// errHeadTooLarge. With strict, a line ending in a bare LF is refused.
// io.EOF with nothing buffered means the peer closed between messages.
func (b *rbuf) readHead(limit int, strict bool) ([]byte, error) {
	scan, empties := 0, 0 // scan: offset from b.r of the first unscanned line
	for {
		i := bytes.IndexByte(b.buf[b.r+scan:b.w], '\n')
		if i < 0 {
			if b.w-b.r > limit {
				return nil, errHeadTooLarge
			}
			if err := b.fill(); err != nil {
				if err == errBufferFull {
					return nil, errHeadTooLarge
				}
				return nil, err
			}
			continue
		}
		start := b.r + scan
		nl := start + i
		cr := nl > start && b.buf[nl-1] == '\r'
		if strict && !cr {
			return nil, errBareLF
		}
		if nl == start || cr && nl-1 == start {
			if scan == 0 {
				if empties++; empties > maxEmptyLines {
					return nil, errEmptyLines
				}
				b.r = nl + 1
				continue
			}
			head := b.buf[b.r : nl+1]
			if len(head) > limit {
				return nil, errHeadTooLarge
			}
			b.r = nl + 1
			return head, nil
		}
		scan = nl + 1 - b.r
	}
}

// nextLine splits the first line off a head checked by readHead, without
// its line ending.
func nextLine(h []byte) (line, rest []byte) {
	i := bytes.IndexByte(h, '\n')
	if i < 0 {
		return h, nil
	}
	line, rest = h[:i], h[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// hkind classifies header fields the proxy treats specially.
type hkind uint8

const (
	hkOther hkind = iota
	hkHost
	hkContentLength
	hkTransferEncoding
	hkConnection
	hkUpgrade
	hkTE
	hkTrailer
	hkHopByHop // Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization
	hkExpect
	hkXFF
	hkXFProto
	hkXFHost
	hkXFPort
	hkXRealIP
	hkForwarded
	hkDate
	hkDropped // named by the Connection header: hop-by-hop for this message
)

// hopByHop reports the kinds that describe one connection rather than the
// message (RFC 9110 §7.6.1).
func (k hkind) hopByHop() bool {
	switch k {
	case hkConnection, hkUpgrade, hkTE, hkTrailer, hkTransferEncoding, hkHopByHop:
		return true
	}
	return false
}

// classify recognizes a field name case-insensitively.
func classify(name []byte) hkind {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return hkTE
		}
	case 4:
		switch {
		case equalFold(name, "host"):
			return hkHost
		case equalFold(name, "date"):
			return hkDate
		}
	case 6:
		if equalFold(name, "expect") {
			return hkExpect
		}
	case 7:
		switch {
		case equalFold(name, "upgrade"):
			return hkUpgrade
		case equalFold(name, "trailer"):
			return hkTrailer
		}
	case 9:
		switch {
		case equalFold(name, "forwarded"):
			return hkForwarded
		case equalFold(name, "x-real-ip"):
			return hkXRealIP
		}
	case 10:
		switch {
		case equalFold(name, "connection"):
			return hkConnection
		case equalFold(name, "keep-alive"):
			return hkHopByHop
		}
	case 14:
		if equalFold(name, "content-length") {
			return hkContentLength
		}
	case 15:
		if equalFold(name, "x-forwarded-for") {
			return hkXFF
		}
	case 16:
		switch {
		case equalFold(name, "x-forwarded-host"):
			return hkXFHost
		case equalFold(name, "x-forwarded-port"):
			return hkXFPort
		case equalFold(name, "proxy-connection"):
			return hkHopByHop
		}
	case 17:
		switch {
		case equalFold(name, "transfer-encoding"):
			return hkTransferEncoding
		case equalFold(name, "x-forwarded-proto"):
			return hkXFProto
		}
	case 18:
		if equalFold(name, "proxy-authenticate") {
			return hkHopByHop
		}
	case 19:
		if equalFold(name, "proxy-authorization") {
			return hkHopByHop
		}
	}
	return hkOther
}

// equalFold compares b with the lowercase ASCII literal s.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// tchar marks the token characters of RFC 9110 §5.6.2.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// validValue reports whether b is a field value: visible ASCII, SP, HTAB
// and obs-text, no other control characters (CR and NUL included).
func validValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// hostChar marks the characters a Host value may contain: a reg-name, an
// IP literal in brackets, a port, percent-escapes, and non-ASCII bytes
// that some clients send for internationalized names.
var hostChar = func() (t [256]bool) {
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=:[]%" {
		t[c] = true
	}
	return t
}()

func validHost(b []byte) bool {
	for _, c := range b {
		if !hostChar[c] {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseField splits a header line into name and value.
func parseField(line []byte) (name, value []byte, err error) {
	if line[0] == ' ' || line[0] == '\t' {
		return nil, nil, errObsFold
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, errFieldName
	}
	name = line[:i]
	if c := name[len(name)-1]; c == ' ' || c == '\t' {
		return nil, nil, errSpaceColon
	}
	if !isToken(name) {
		return nil, nil, errFieldName
	}
	value = trimOWS(line[i+1:])
	if !validValue(value) {
		return nil, nil, errFieldValue
	}
	return name, value, nil
}

// parseContentLength accepts 1 to 18 decimal digits: enough for any body
// and never overflowing int64.
func parseContentLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// forEachToken calls fn for each element of a comma-separated list.
func forEachToken(v []byte, fn func(tok []byte)) {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if t = trimOWS(t); len(t) > 0 {
			fn(t)
		}
	}
}

// hfield is one header field of a parsed head; name and value point into
// the head's buffer.
type hfield struct {
	name, value []byte
	kind        hkind
}

// connFlags are the tokens of a Connection header.
type connFlags struct {
	close, keepAlive, upgrade bool
	// other: more tokens naming hop-by-hop fields to drop.
	other bool
}

func (f *connFlags) add(v []byte) {
	forEachToken(v, func(t []byte) {
		switch {
		case equalFold(t, "close"):
			f.close = true
		case equalFold(t, "keep-alive"):
			f.keepAlive = true
		case equalFold(t, "upgrade"):
			f.upgrade = true
		default:
			f.other = true
		}
	})
}

// dropConnectionListed marks the fields a Connection header names as
// hop-by-hop. Framing fields stay what the parser made of them.
func dropConnectionListed(fields []hfield) {
	for i := range fields {
		if fields[i].kind != hkConnection {
			continue
		}
		forEachToken(fields[i].value, func(t []byte) {
			for j := range fields {
				f := &fields[j]
				switch f.kind {
				case hkHost, hkContentLength, hkTransferEncoding, hkConnection:
					continue
				}
				if len(f.name) == len(t) && bytes.EqualFold(f.name, t) {
					f.kind = hkDropped
				}
			}
		})
	}
}

// h1req is a parsed request head. Slices point into head, which the
// connection owns until the next request.
type h1req struct {
	head   []byte
	method []byte
	target []byte // as received
	// uri is the origin-form target sent upstream: target itself, or the
	// path and query of an absolute-form target.
	uri    []byte
	path   []byte // raw path of uri, without the query
	minor  int    // HTTP/1.minor: 0 or 1
	fields []hfield
	host   []byte
	// contentLength is -1 without a Content-Length field.
	contentLength int64
	chunked       bool
	conn          connFlags
	expect100     bool
	upgrade       []byte // Upgrade value when Connection has "upgrade"
	teTrailers    bool
	// absolute: the target was in absolute form; its authority replaces
	// the Host field (RFC 9112 §3.2.2). slash: its path was empty, so
	// "/" goes before uri.
	absolute, slash bool
}

// hasBody reports whether the request carries a body to forward.
func (q *h1req) hasBody() bool { return q.chunked || q.contentLength > 0 }

// keepAlive reports whether the client wants the connection kept after
// this request (RFC 9112 §9.3).
func (q *h1req) keepAlive() bool {
	if q.conn.close {
		return false
	}
	return q.minor >= 1 || q.conn.keepAlive
}

// parseRequest parses a head returned by readHead into q, reusing q's
// field slice. It returns an *h1Error for anything it refuses.
func parseRequest(head []byte, q *h1req) error {
	*q = h1req{head: head, fields: q.fields[:0], contentLength: -1}
	line, rest := nextLine(head)
	if err := q.parseRequestLine(line); err != nil {
		return err
	}
	hosts, cls, tes := 0, 0, 0
	for len(rest) > 0 {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		name, value, err := parseField(line)
		if err != nil {
			return err
		}
		k := classify(name)
		switch k {
		case hkHost:
			if hosts++; hosts > 1 || !validHost(value) {
				return errHost
			}
			if !q.absolute {
				q.host = value
			}
		case hkContentLength:
			n, ok := parseContentLength(value)
			if cls++; !ok || cls > 1 {
				return errContentLength
			}
			q.contentLength = n
		case hkTransferEncoding:
			if tes++; tes > 1 || !equalFold(value, "chunked") {
				return errTransferEnc
			}
			q.chunked = true
		case hkConnection:
			q.conn.add(value)
		case hkExpect:
			if !equalFold(value, "100-continue") {
				return errExpect
			}
			q.expect100 = true
		case hkTE:
			forEachToken(value, func(t []byte) {
				if equalFold(t, "trailers") {
					q.teTrailers = true
				}
			})
		case hkUpgrade:
			q.upgrade = value
		}
		q.fields = append(q.fields, hfield{name: name, value: value, kind: k})
	}
	if q.chunked && (cls > 0 || q.minor == 0) {
		// RFC 9112 §6.1: either may be a smuggling attempt; a proxy must
		// not pick one reading when a peer could pick the other.
		if cls > 0 {
			return errCLAndTE
		}
		return errTransferEnc
	}
	if hosts == 0 && q.minor >= 1 && !q.absolute {
		return errHost
	}
	if !q.conn.upgrade {
		q.upgrade = nil
	}
	if q.conn.other {
		dropConnectionListed(q.fields)
	}
	return nil
}

func (q *h1req) parseRequestLine(line []byte) error {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errRequestLine
	}
	q.method = line[:sp]
	if !isToken(q.method) {
		return errMethod
	}
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errRequestLine
	}
	q.target = line[:sp]
	version := line[sp+1:]
	if len(version) != 8 || string(version[:7]) != "HTTP/1." {
		if len(version) == 8 && string(version[:5]) == "HTTP/" && version[5] >= '0' && version[5] <= '9' && version[6] == '.' {
			return errVersion
		}
		return errRequestLine
	}
	switch d := version[7]; {
	case d == '0':
		q.minor = 0
	case d >= '1' && d <= '9':
		q.minor = 1
	default:
		return errRequestLine
	}
	for _, c := range q.target {
		if c <= ' ' || c == 0x7f || c == '#' {
			return errTarget
		}
	}
	switch t := q.target; {
	case t[0] == '/':
		q.uri = t
	case len(t) == 1 && t[0] == '*':
		q.uri = t
	default:
		if err := q.parseAbsolute(t); err != nil {
			return err
		}
	}
	q.path = q.uri
	if i := bytes.IndexByte(q.uri, '?'); i >= 0 {
		q.path = q.uri[:i]
	}
	return nil
}

// parseAbsolute accepts "http://authority/path?query" (and https), the
// form clients use towards forward proxies and servers must accept.
func (q *h1req) parseAbsolute(t []byte) error {
	var rest []byte
	switch {
	case len(t) > 7 && equalFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && equalFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return errTarget
	}
	end := bytes.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	if len(auth) == 0 || !validHost(auth) {
		return errTarget
	}
	q.host = auth
	q.absolute = true
	q.uri = rest[end:]
	q.slash = len(q.uri) == 0 || q.uri[0] == '?'
	return nil
}

// decodePath percent-decodes a raw path into dst (the router matches
// decoded paths, as net/http's URL.Path). It refuses malformed escapes.
func decodePath(dst, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) {
				return nil, false
			}
			h, ok1 := unhex(raw[i+1])
			l, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return nil, false
			}
			c = h<<4 | l
			i += 2
		}
		dst = append(dst, c)
	}
	return dst, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// h1resp is a parsed upstream response head; slices point into the
// upstream connection's buffer until its next fill.
type h1resp struct {
	minor         int
	status        int
	fields        []hfield
	contentLength int64 // -1 without Content-Length
	chunked       bool
	conn          connFlags
	hasDate       bool
	hasTrailer    bool
}

// keepAlive reports whether the upstream connection may be reused.
func (s *h1resp) keepAlive() bool {
	if s.conn.close {
		return false
	}
	return s.minor >= 1 || s.conn.keepAlive
}

// parseResponse parses an upstream's response head into s.
func parseResponse(head []byte, s *h1resp) error {
	*s = h1resp{fields: s.fields[:0], contentLength: -1}
	line, rest := nextLine(head)
	// "HTTP/1.1 200 OK"; the reason phrase may be empty or missing.
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' ||
		len(line) > 12 && line[12] != ' ' {
		return errStatusLine
	}
	if line[7] == '0' {
		s.minor = 0
	} else {
		s.minor = 1
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return errStatusLine
		}
		s.status = s.status*10 + int(c-'0')
	}
	if s.status < 100 {
		return errStatusLine
	}
	cls := 0
	for len(rest) > 0 {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		name, value, err := parseField(line)
		if err != nil {
			return errResponseFields
		}
		k := classify(name)
		switch k {
		case hkContentLength:
			n, ok := parseContentLength(value)
			if !ok || cls > 0 && n != s.contentLength {
				return errResponseFrame
			}
			cls++
			s.contentLength = n
		case hkTransferEncoding:
			// Only "chunked" is understood; anything else cannot be
			// framed safely.
			if s.chunked || !equalFold(value, "chunked") {
				return errResponseFrame
			}
			s.chunked = true
		case hkConnection:
			s.conn.add(value)
		case hkDate:
			s.hasDate = true
		case hkTrailer:
			s.hasTrailer = true
		case hkHost, hkExpect, hkXFF, hkXFProto, hkXFHost, hkXFPort, hkXRealIP, hkForwarded:
			k = hkOther
		}
		s.fields = append(s.fields, hfield{name: name, value: value, kind: k})
	}
	if s.chunked && cls > 0 {
		return errResponseFrame
	}
	if s.conn.other {
		dropConnectionListed(s.fields)
	}
	return nil
}

// bodyKind is how a message body is delimited.
type bodyKind uint8

const (
	bodyNone bodyKind = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// responseBodyKind is how the body of an upstream response is delimited.
// Responses to HEAD and 204/304 never carry one, whatever they announce
// (RFC 9112 section 6.3).
func responseBodyKind(method string, resp *h1resp) bodyKind {
	switch {
	case method == http.MethodHead || resp.status == http.StatusNoContent || resp.status == http.StatusNotModified:
		return bodyNone
	case resp.chunked:
		return bodyChunked
	case resp.contentLength >= 0:
		return bodyLength
	}
	return bodyUntilClose
}

// Chunked decoding states.
const (
	csSize uint8 = iota
	csData
	csDataEnd
	csTrailer
	csDone
)

// maxChunkLine bounds a chunk size line including extensions.
const maxChunkLine = 4096

// bodySrc reads one message body's payload out of a connection's buffer,
// decoding chunked framing. It never reads the connection itself: next
// hands out what is buffered and says when it needs more, so the caller
// can flush its output before blocking.
type bodySrc struct {
	rb     *rbuf
	kind   bodyKind
	strict bool  // refuse bare LF in chunk framing (clients)
	left   int64 // bodyLength: payload left; bodyChunked: left in this chunk
	state  uint8
	// trailer collects the raw trailer fields (each with CRLF) of a
	// chunked body, bounded by trailerMax.
	trailer    []byte
	trailerMax int
}

func (b *bodySrc) reset(rb *rbuf, kind bodyKind, n int64, strict bool, trailerMax int) {
	*b = bodySrc{rb: rb, kind: kind, left: n, strict: strict, trailer: b.trailer[:0], trailerMax: trailerMax}
	if kind == bodyLength && n == 0 {
		b.kind = bodyNone
	}
}

// next returns buffered payload, consuming it; the slice is valid until
// the buffer is filled again. It returns (nil, nil) when it needs the
// buffer filled first, and io.EOF after the last byte.
func (b *bodySrc) next() ([]byte, error) { return b.nextMax(maxInt) }

const maxInt = int(^uint(0) >> 1)

// nextMax is next returning at most max bytes.
func (b *bodySrc) nextMax(max int) ([]byte, error) {
	rb := b.rb
	switch b.kind {
	case bodyNone:
		return nil, io.EOF
	case bodyLength:
		if b.left == 0 {
			return nil, io.EOF
		}
		n := int64(min(rb.buffered(), max))
		if n == 0 {
			return nil, nil
		}
		n = min(n, b.left)
		p := rb.buf[rb.r : rb.r+int(n)]
		rb.r += int(n)
		b.left -= n
		return p, nil
	case bodyUntilClose:
		n := min(rb.buffered(), max)
		if n == 0 {
			return nil, nil
		}
		p := rb.buf[rb.r : rb.r+n]
		rb.r += n
		return p, nil
	}
	for {
		switch b.state {
		case csSize:
			line, ok, err := b.line(maxChunkLine)
			if !ok {
				return nil, err
			}
			n, ok := parseChunkSize(line)
			if !ok {
				return nil, errChunkSize
			}
			b.left = n
			b.state = csData
			if n == 0 {
				b.state = csTrailer
			}
		case csData:
			if b.left == 0 {
				b.state = csDataEnd
				continue
			}
			n := int64(min(rb.buffered(), max))
			if n == 0 {
				return nil, nil
			}
			n = min(n, b.left)
			p := rb.buf[rb.r : rb.r+int(n)]
			rb.r += int(n)
			b.left -= n
			return p, nil
		case csDataEnd:
			bs := rb.bytes()
			switch {
			case len(bs) >= 2 && bs[0] == '\r' && bs[1] == '\n':
				rb.r += 2
			case !b.strict && len(bs) >= 1 && bs[0] == '\n':
				rb.r++
			case len(bs) < 2 && (len(bs) == 0 || bs[0] == '\r'):
				return nil, nil
			default:
				return nil, errChunkData
			}
			b.state = csSize
		case csTrailer:
			line, ok, err := b.line(b.trailerMax)
			if !ok {
				return nil, err
			}
			if len(line) == 0 {
				b.state = csDone
				return nil, io.EOF
			}
			if _, _, err := parseField(line); err != nil {
				return nil, errTrailer
			}
			if len(b.trailer)+len(line)+2 > b.trailerMax {
				return nil, errTrailer
			}
			b.trailer = append(append(b.trailer, line...), '\r', '\n')
		case csDone:
			return nil, io.EOF
		}
	}
}

// line takes a complete line out of the buffer; ok is false when it is
// not complete yet (err then says whether it can still become one).
func (b *bodySrc) line(limit int) (line []byte, ok bool, err error) {
	rb := b.rb
	bs := rb.bytes()
	i := bytes.IndexByte(bs, '\n')
	if i < 0 {
		if len(bs) > limit {
			return nil, false, errChunkSize
		}
		return nil, false, nil
	}
	line = bs[:i]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	} else if b.strict {
		return nil, false, errBareLF
	}
	rb.r += i + 1
	return line, true, nil
}

// parseChunkSize reads "1a" or "1a;ext=v" (RFC 9112 §7.1): 1 to 16 hex
// digits, optional whitespace, then extensions, which are validated and
// ignored.
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		d, ok := unhex(line[i])
		if !ok {
			break
		}
		if i == 16 {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	if i == 0 || n < 0 {
		return 0, false
	}
	rest := line[i:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) > 0 && (rest[0] != ';' || !validValue(rest)) {
		return 0, false
	}
	return n, true
}
