package l7proxy

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// Request header blocks of the HTTP/2 server: HEADERS and CONTINUATION
// frames decoded into the stream's pooled request, validated as RFC 9113
// §8 asks, within the header list and frame limits.

// headerBlock is a header block being received (HEADERS, then
// CONTINUATION frames until END_HEADERS).
type headerBlock struct {
	sid                                         uint32
	st                                          *h2srvStream // nil: the block is decoded only for HPACK's state
	trailers                                    bool         // the block is a request's trailer section
	endStream                                   bool
	frames                                      int
	size                                        int // decoded header list size so far
	tooLarge                                    bool
	malformed                                   string
	regular                                     bool // a regular field was seen (pseudo-fields must come first)
	method, scheme, authority, path             string
	sawMethod, sawScheme, sawAuthority, sawPath bool
}

func (c *h2conn) onHeaders(flags byte, sid uint32, p []byte) error {
	if sid == 0 {
		return connError{codeProtocol, "HEADERS on stream 0"}
	}
	if sid%2 == 0 {
		return connError{codeProtocol, "HEADERS on an even stream id"}
	}
	frag, err := unpad(flags, p)
	if err != nil {
		return err
	}
	if flags&flagPriority != 0 {
		if len(frag) < 5 {
			return connError{codeFrameSize, "HEADERS priority fields"}
		}
		dep := uint32(frag[0])<<24&0x7f000000 | uint32(frag[1])<<16 | uint32(frag[2])<<8 | uint32(frag[3])
		frag = frag[5:]
		if dep == sid {
			// Decoded anyway (HPACK state), then the stream is reset.
			c.mu.Lock()
			if sid > c.maxID {
				c.maxID = sid
			}
			c.mu.Unlock()
			c.block = headerBlock{sid: sid, endStream: flags&flagEndStream != 0, malformed: "depends on itself"}
			return c.blockFragment(flags, frag)
		}
	}
	b := headerBlock{sid: sid, endStream: flags&flagEndStream != 0}
	c.mu.Lock()
	st := c.streams[sid]
	switch {
	case st != nil:
		// A trailer section: it must end the stream.
		c.mu.Unlock()
		if st.remoteDone {
			c.resetStream(sid, codeStreamClosed)
			c.block = b
			return c.blockFragment(flags, frag)
		}
		if flags&flagEndStream == 0 {
			return connError{codeProtocol, "trailers without END_STREAM"}
		}
		b.st, b.trailers = st, true
	case sid <= c.maxID:
		closed := c.wasClosed(sid)
		c.mu.Unlock()
		if closed {
			return connError{codeStreamClosed, "HEADERS on a closed stream"}
		}
		return connError{codeProtocol, "stream id not increasing"}
	default:
		c.maxID = sid
		refuse := c.goingAway || c.dead
		c.mu.Unlock()
		if !refuse {
			b.st = newSrvStream(c, sid)
		}
	}
	c.block = b
	return c.blockFragment(flags, frag)
}

func (c *h2conn) onContinuation(flags byte, sid uint32, p []byte) error {
	if c.block.sid == 0 || sid != c.block.sid {
		return connError{codeProtocol, "CONTINUATION without a header block"}
	}
	if len(p) == 0 && flags&flagEndHeaders == 0 {
		if err := c.count(&c.churn, h2MaxChurnPerSec); err != nil {
			return err
		}
	}
	return c.blockFragment(flags, p)
}

// blockFragment decodes one fragment of the header block in progress, and
// ends the block on END_HEADERS.
func (c *h2conn) blockFragment(flags byte, frag []byte) error {
	b := &c.block
	b.frames++
	if b.frames > h2MaxContinuations {
		return connError{codeEnhanceYourCalm, "too many CONTINUATION frames"}
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return connError{codeCompression, err.Error()}
	}
	if b.tooLarge && b.size > 4*c.p.opts.MaxHeaderBytes {
		// Decoding on would only feed a flood.
		return connError{codeEnhanceYourCalm, "header block far over the limit"}
	}
	if flags&flagEndHeaders == 0 {
		if b.frames == 1 {
			// A slow header block must complete in time.
			_ = c.conn.SetReadDeadline(time.Now().Add(c.p.opts.ReadHeaderTimeout))
		}
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return connError{codeCompression, err.Error()}
	}
	c.hdec.SetEmitEnabled(true)
	if b.frames > 1 {
		_ = c.conn.SetReadDeadline(time.Time{})
		c.mu.Lock()
		c.idleSet = false
		c.setIdleDeadline()
		c.mu.Unlock()
	}
	blk := *b
	c.block = headerBlock{}
	return c.endBlock(&blk)
}

// onField receives each decoded field of the block in progress.
func (c *h2conn) onField(f hpack.HeaderField) {
	b := &c.block
	b.size += len(f.Name) + len(f.Value) + 32
	if b.size > c.p.opts.MaxHeaderBytes {
		b.tooLarge = true
		c.hdec.SetEmitEnabled(false)
		return
	}
	if b.malformed != "" || b.st == nil {
		return
	}
	if f.IsPseudo() {
		if b.regular || b.trailers {
			b.malformed = "pseudo-header field after a regular one"
			return
		}
		var seen *bool
		switch f.Name {
		case ":method":
			seen, b.method = &b.sawMethod, f.Value
		case ":scheme":
			seen, b.scheme = &b.sawScheme, f.Value
		case ":authority":
			seen, b.authority = &b.sawAuthority, f.Value
		case ":path":
			seen, b.path = &b.sawPath, f.Value
		default:
			b.malformed = "unknown pseudo-header field"
			return
		}
		if *seen {
			b.malformed = "repeated pseudo-header field"
		}
		*seen = true
		return
	}
	b.regular = true
	if !validFieldName(f.Name) {
		b.malformed = "invalid field name"
		return
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		b.malformed = "invalid field value"
		return
	}
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		b.malformed = "connection-specific field"
		return
	case "te":
		if f.Value != "trailers" {
			b.malformed = "TE other than trailers"
			return
		}
	}
	st := b.st
	if b.trailers {
		if st.req.Trailer == nil {
			st.req.Trailer = make(http.Header)
		}
		k := c.canonical(f.Name)
		st.req.Trailer[k] = append(st.req.Trailer[k], f.Value)
		return
	}
	if f.Name == "expect" && strings.EqualFold(f.Value, "100-continue") {
		st.expect = true
	}
	if f.Name == "content-length" {
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if err != nil || n < 0 || st.declared >= 0 && st.declared != n {
			b.malformed = "invalid content-length"
			return
		}
		st.declared = n
	}
	st.addField(c.canonical(f.Name), f.Value)
}

// validFieldName: a token in lower case (RFC 9113 §8.2.1).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// endBlock acts on a complete header block: a new request starts, a
// trailer section ends a body, a malformed one resets its stream.
func (c *h2conn) endBlock(b *headerBlock) error {
	st := b.st
	if b.trailers {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.streams[b.sid] != st {
			return nil
		}
		if b.malformed != "" || b.tooLarge {
			c.resetLocked(st, codeProtocol)
			return nil
		}
		if st.declared >= 0 && st.bodyN != st.declared {
			c.resetLocked(st, codeProtocol)
			return nil
		}
		st.remoteEnd()
		return nil
	}
	if st == nil {
		if b.malformed != "" {
			c.resetStream(b.sid, codeProtocol)
		}
		return nil // a refused stream: the client retries it elsewhere
	}
	if b.malformed == "" && !b.tooLarge {
		b.malformed = st.setRequest(b)
	}
	if b.malformed != "" {
		c.p.log.Debug("malformed http2 request", "peer", c.ci.peerStr, "err", b.malformed)
		st.free()
		c.resetStream(b.sid, codeProtocol)
		return nil
	}
	c.mu.Lock()
	if c.active >= h2MaxStreams {
		c.mu.Unlock()
		st.free()
		c.resetStream(b.sid, codeRefusedStream)
		return nil
	}
	st.sendWindow = c.peerInitWindow
	st.remoteDone = b.endStream
	c.streams[b.sid] = st
	c.active++
	c.setIdleDeadline()
	c.mu.Unlock()
	if b.tooLarge {
		st.tooLarge = true
	}
	c.handlers.Add(1)
	go st.run()
	return nil
}

// commonCanonical maps the lower-case names most requests carry to their
// canonical form without allocating.
var commonCanonical = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expect",
		"Forwarded", "From", "Grpc-Accept-Encoding", "Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Timeout",
		"Host", "If-Match", "If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Last-Modified",
		"Location", "Origin", "Pragma", "Range", "Referer", "Server", "Set-Cookie", "Te", "Trailer", "User-Agent",
		"Vary", "Via", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Port", "X-Forwarded-Proto",
		"X-Real-Ip", "X-Request-Id"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// commonLower is commonCanonical the other way round.
var commonLower = func() map[string]string {
	m := map[string]string{}
	for l, k := range commonCanonical {
		m[k] = l
	}
	return m
}()

const h2NameCacheMax = 128

// canonical returns the canonical form of a lower-case field name,
// remembering the connection's own names.
func (c *h2conn) canonical(name string) string {
	if k, ok := commonCanonical[name]; ok {
		return k
	}
	if k, ok := c.canon[name]; ok {
		return k
	}
	k := textproto.CanonicalMIMEHeaderKey(name)
	if c.canon == nil {
		c.canon = make(map[string]string)
	}
	if len(c.canon) < h2NameCacheMax {
		c.canon[name] = k
	}
	return k
}

// lowerName returns the HTTP/2 (lower-case) form of a response field
// name. Called with mu held.
func (c *h2conn) lowerName(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	if l, ok := c.lower[k]; ok {
		return l
	}
	l := strings.ToLower(k)
	if c.lower == nil {
		c.lower = make(map[string]string)
	}
	if len(c.lower) < h2NameCacheMax {
		c.lower[k] = l
	}
	return l
}

// addField adds a request field; value slices come from one backing
// array per stream.
func (st *h2srvStream) addField(k, v string) {
	if old, ok := st.hdr[k]; ok {
		if k == "Cookie" {
			// Split cookies are one field towards HTTP/1.1 (§8.2.3).
			old[0] = old[0] + "; " + v
			return
		}
		st.hdr[k] = append(old[:len(old):len(old)], v)
		return
	}
	st.vals = append(st.vals, v)
	n := len(st.vals)
	st.hdr[k] = st.vals[n-1 : n : n]
}

// setRequest fills the stream's request from its header block; it
// returns why the request is malformed, if it is.
func (st *h2srvStream) setRequest(b *headerBlock) string {
	if !b.sawMethod {
		return "no :method"
	}
	if b.method == http.MethodConnect {
		// No tunnels: the pipeline answers 405 to CONNECT.
		if b.sawScheme || b.sawPath || !b.sawAuthority {
			return "malformed CONNECT"
		}
	} else if !b.sawScheme || !b.sawPath || b.path == "" {
		return "missing :scheme or :path"
	}
	if !httpguts.ValidHostHeader(b.authority) {
		return "invalid :authority"
	}
	host := b.authority
	if !b.sawAuthority {
		if h := st.hdr["Host"]; len(h) > 0 {
			host = h[0]
		}
	}
	delete(st.hdr, "Host")
	r := &st.req
	*r = http.Request{
		Method: b.method, Proto: "HTTP/2.0", ProtoMajor: 2, Header: st.hdr, Host: host,
		RequestURI: b.path, RemoteAddr: st.c.ci.peerStr, ContentLength: -1,
	}
	st.u = url.URL{}
	p := b.path
	if b.method == http.MethodConnect {
		p = "/"
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		st.u.RawQuery = p[i+1:]
		p = p[:i]
	}
	switch {
	case p == "*" && b.method == http.MethodOptions:
		st.u.Path = "*"
	case p == "" || p[0] != '/':
		return "invalid :path"
	case strings.IndexByte(p, '%') >= 0:
		dec, ok := decodePath(nil, []byte(p))
		if !ok {
			return "invalid :path"
		}
		st.u.Path, st.u.RawPath = string(dec), p
	default:
		st.u.Path = p
	}
	r.URL = &st.u
	switch {
	case b.endStream:
		r.ContentLength = 0
		if st.declared > 0 {
			return "content-length without a body"
		}
	case st.declared >= 0:
		r.ContentLength = st.declared
	}
	if r.ContentLength != 0 {
		if t := st.c.p.opts.ReadTimeout; t > 0 {
			st.bodyDeadline = time.Now().Add(t)
		}
		r.Body = (*srvBody)(st)
	} else {
		r.Body = http.NoBody
	}
	return ""
}
