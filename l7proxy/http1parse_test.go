package l7proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// headConn is a net.Conn reading from a fixed string, for feeding rbuf.
type headConn struct {
	net.Conn
	r io.Reader
}

func (c *headConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *headConn) SetReadDeadline(time.Time) error { return nil }

// oneByteReader returns one byte per Read, to exercise partial heads.
type oneByteReader struct{ s string }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	p[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}

func newTestRbuf(src io.Reader, size, max int) *rbuf {
	return &rbuf{conn: &headConn{r: src}, buf: make([]byte, size), max: max}
}

// parseRaw reads one request head from raw and parses it.
func parseRaw(raw string, limit int) (*h1req, error) {
	rb := newTestRbuf(strings.NewReader(raw), 64, limit+64)
	head, err := rb.readHead(limit, true)
	if err != nil {
		return nil, err
	}
	q := &h1req{}
	if err := parseRequest(append([]byte(nil), head...), q); err != nil {
		return nil, err
	}
	return q, nil
}

func statusOf(err error) int {
	var he *h1Error
	if errors.As(err, &he) {
		return he.status
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestParseRequestRejects covers request smuggling vectors and malformed
// heads: each must be refused with the given status, never read in some
// way a peer could read differently.
func TestParseRequestRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want int
	}{
		// CL.TE and TE.CL: both framings present.
		{"CL.TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE.CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n", 400},
		{"CL.TE with zero length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		// TE.TE: obfuscated Transfer-Encoding values and names.
		{"TE xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 400},
		{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400},
		{"TE identity, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 400},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400},
		{"TE twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE chunked then identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400},
		{"TE quoted", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400},
		{"TE chunk", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunk\r\n\r\n", 400},
		{"TE with control char", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", 400},
		{"TE with NUL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chu\x00nked\r\n\r\n", 400},
		{"TE space before colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", 400},
		{"TE tab before colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n", 400},
		{"TE folded", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE name with space", "POST / HTTP/1.1\r\nHost: x\r\nTransfer Encoding: chunked\r\n\r\n", 400},
		{"leading space line", "POST / HTTP/1.1\r\nHost: x\r\n Transfer-Encoding: chunked\r\n\r\n", 400},
		// Content-Length variants.
		{"CL twice equal", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400},
		{"CL twice differing", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", 400},
		{"CL plus sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400},
		{"CL minus sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
		{"CL inner space", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n", 400},
		{"CL hex", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400},
		{"CL empty", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400},
		{"CL huge", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"CL 19 digits", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\n", 400},
		{"CL space before colon", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n", 400},
		// Line endings.
		{"bare LF in head", "GET / HTTP/1.1\nHost: x\n\n", 400},
		{"bare LF after field", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", 400},
		// Request line.
		{"lowercase version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400},
		{"HTTP/2 version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"HTTP/0.9 style", "GET /\r\n\r\n", 400},
		{"version with suffix", "GET / HTTP/1.1x\r\nHost: x\r\n\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400},
		{"tab separator", "GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"method with slash", "GE/T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"empty method", " / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"target with control char", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"target with DEL", "GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"target with fragment", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"ftp absolute target", "GET ftp://x/a HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"absolute without authority", "GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"absolute with userinfo", "GET http://u@x/a HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		// Host.
		{"no host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"host with at", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		// Field names.
		{"empty name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400},
		{"name with bracket", "GET / HTTP/1.1\r\nHost: x\r\nX[1]: v\r\n\r\n", 400},
		{"name with non-ASCII", "GET / HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: v\r\n\r\n", 400},
		// Expect.
		{"unknown expectation", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", 417},
		// Size.
		{"head too large", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431},
		{"request line too large", "GET /" + strings.Repeat("a", 2000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 431},
		{"too many empty lines", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := parseRaw(tt.raw, 1024)
			if got := statusOf(err); got != tt.want {
				t.Errorf("status %d (err %v, parsed %+v), want %d", got, err, q, tt.want)
			}
		})
	}
}

func TestParseRequestAccepts(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		method   string
		uri      string // as sent upstream (with the "/" a slash target gets)
		path     string
		host     string
		minor    int
		cl       int64
		chunked  bool
		keep     bool
		expect   bool
		upgrade  string
		trailers bool
	}{
		{name: "simple get", raw: "GET /a?b=c HTTP/1.1\r\nHost: x.example\r\n\r\n",
			method: "GET", uri: "/a?b=c", path: "/a", host: "x.example", minor: 1, cl: -1, keep: true},
		{name: "chunked any case", raw: "POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: CHUNKED\r\n\r\n",
			method: "POST", uri: "/", path: "/", host: "x", minor: 1, cl: -1, chunked: true, keep: true},
		{name: "content-length with OWS", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \t 12 \r\n\r\n",
			method: "POST", uri: "/", path: "/", host: "x", minor: 1, cl: 12, keep: true},
		{name: "http/1.0 closes", raw: "GET / HTTP/1.0\r\n\r\n",
			method: "GET", uri: "/", path: "/", minor: 0, cl: -1},
		{name: "http/1.0 keep-alive", raw: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "h", minor: 0, cl: -1, keep: true},
		{name: "http/1.1 close", raw: "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "h", minor: 1, cl: -1},
		{name: "http/1.2 read as 1.1", raw: "GET / HTTP/1.2\r\nHost: h\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "h", minor: 1, cl: -1, keep: true},
		{name: "absolute form overrides host", raw: "GET http://Abs.Example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
			method: "GET", uri: "/p?q", path: "/p", host: "Abs.Example:8080", minor: 1, cl: -1, keep: true},
		{name: "absolute form without path", raw: "GET https://abs.example?q HTTP/1.1\r\nHost: abs.example\r\n\r\n",
			method: "GET", uri: "/?q", path: "/", host: "abs.example", minor: 1, cl: -1, keep: true},
		{name: "leading empty line", raw: "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "h", minor: 1, cl: -1, keep: true},
		{name: "expect continue", raw: "PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
			method: "PUT", uri: "/u", path: "/u", host: "h", minor: 1, cl: 3, keep: true, expect: true},
		{name: "websocket upgrade", raw: "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", uri: "/ws", path: "/ws", host: "h", minor: 1, cl: -1, keep: true, upgrade: "websocket"},
		{name: "upgrade without connection token", raw: "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", uri: "/ws", path: "/ws", host: "h", minor: 1, cl: -1, keep: true},
		{name: "te trailers", raw: "POST /g HTTP/1.1\r\nHost: h\r\nTE: deflate, trailers\r\nContent-Length: 0\r\n\r\n",
			method: "POST", uri: "/g", path: "/g", host: "h", minor: 1, cl: 0, keep: true, trailers: true},
		{name: "extension method", raw: "PROPFIND /d HTTP/1.1\r\nHost: h\r\n\r\n",
			method: "PROPFIND", uri: "/d", path: "/d", host: "h", minor: 1, cl: -1, keep: true},
		{name: "ipv6 host", raw: "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "[2001:db8::1]:80", minor: 1, cl: -1, keep: true},
		{name: "non-ascii value", raw: "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n",
			method: "GET", uri: "/", path: "/", host: "h", minor: 1, cl: -1, keep: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := parseRaw(tt.raw, 1024)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			uri := string(q.uri)
			if q.slash {
				uri = "/" + uri
			}
			path := string(q.path)
			if q.slash {
				path = "/"
			}
			if string(q.method) != tt.method || uri != tt.uri || path != tt.path || string(q.host) != tt.host ||
				q.minor != tt.minor || q.contentLength != tt.cl || q.chunked != tt.chunked || q.keepAlive() != tt.keep ||
				q.expect100 != tt.expect || string(q.upgrade) != tt.upgrade || q.teTrailers != tt.trailers {
				t.Errorf("got method %q uri %q path %q host %q minor %d cl %d chunked %v keep %v expect %v upgrade %q trailers %v",
					q.method, uri, path, q.host, q.minor, q.contentLength, q.chunked, q.keepAlive(), q.expect100, q.upgrade, q.teTrailers)
			}
		})
	}
}

func TestConnectionListedFieldsDropped(t *testing.T) {
	q, err := parseRaw("GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, host, content-length\r\nX-Secret: 1\r\nX-Keep: 2\r\n\r\n", 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range q.fields {
		switch string(f.name) {
		case "X-Secret":
			if f.kind != hkDropped {
				t.Error("X-Secret named by Connection not dropped")
			}
		case "X-Keep":
			if f.kind != hkOther {
				t.Error("X-Keep dropped")
			}
		case "Host":
			if f.kind != hkHost {
				t.Error("Connection may not turn Host into a hop-by-hop field")
			}
		}
	}
}

func TestReadHeadPartial(t *testing.T) {
	raw := "GET /p HTTP/1.1\r\nHost: h\r\nX-Long: " + strings.Repeat("v", 300) + "\r\n\r\nGET /next HTTP/1.1\r\n"
	rb := newTestRbuf(&oneByteReader{s: raw}, 16, 2048)
	head, err := rb.readHead(1024, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(head, []byte("GET /p HTTP/1.1\r\n")) || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		t.Errorf("head %q", head)
	}
	// The pipelined rest stays for the next read.
	if _, err := rb.readHead(1024, true); err != io.EOF {
		t.Errorf("incomplete next head: %v, want EOF", err)
	}
}

// chunkedBody decodes a whole chunked body through bodySrc, with the
// connection delivering one byte at a time.
func chunkedBody(raw string, strict bool) (string, string, error) {
	rb := newTestRbuf(&oneByteReader{s: raw}, 8, 1<<20)
	var src bodySrc
	src.reset(rb, bodyChunked, 0, strict, 1024)
	var out bytes.Buffer
	for {
		p, err := src.next()
		out.Write(p)
		if err == io.EOF {
			return out.String(), string(src.trailer), nil
		}
		if err != nil {
			return out.String(), "", err
		}
		if p == nil {
			if err := rb.fill(); err != nil {
				return out.String(), "", err
			}
		}
	}
}

func TestChunkedDecoding(t *testing.T) {
	tests := []struct {
		name, raw     string
		strict        bool
		body, trailer string
		wantErr       bool
	}{
		{name: "simple", raw: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", strict: true, body: "hello world"},
		{name: "upper hex", raw: "A\r\n0123456789\r\n0\r\n\r\n", strict: true, body: "0123456789"},
		{name: "leading zeros", raw: "0005\r\nhello\r\n0\r\n\r\n", strict: true, body: "hello"},
		{name: "extension", raw: "5;name=value\r\nhello\r\n0;last\r\n\r\n", strict: true, body: "hello"},
		{name: "extension after whitespace", raw: "5 ;x\r\nhello\r\n0\r\n\r\n", strict: true, body: "hello"},
		{name: "trailer", raw: "5\r\nhello\r\n0\r\nGrpc-Status: 0\r\nX-T: v\r\n\r\n", strict: true, body: "hello", trailer: "Grpc-Status: 0\r\nX-T: v\r\n"},
		{name: "bare LF size line strict", raw: "5\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "bare LF size line lenient", raw: "5\nhello\n0\n\n", body: "hello"},
		{name: "bare LF after data strict", raw: "5\r\nhello\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "missing CRLF after data", raw: "5\r\nhelloX\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "data longer than size", raw: "3\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "empty size", raw: "\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "negative size", raw: "-5\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "0x prefix", raw: "0x5\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "plus sign", raw: "+5\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "non-hex", raw: "g\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "overflowing size", raw: "10000000000000000\r\n", strict: true, wantErr: true},
		{name: "sign bit size", raw: "8000000000000000\r\n", strict: true, wantErr: true},
		{name: "junk after size", raw: "5 x\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "control char in extension", raw: "5;a\x01\r\nhello\r\n0\r\n\r\n", strict: true, wantErr: true},
		{name: "malformed trailer", raw: "0\r\nnot a field\r\n\r\n", strict: true, wantErr: true},
		{name: "folded trailer", raw: "0\r\nX: a\r\n b\r\n\r\n", strict: true, wantErr: true},
		{name: "truncated", raw: "5\r\nhel", strict: true, wantErr: true},
		{name: "no last chunk", raw: "5\r\nhello\r\n", strict: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, trailer, err := chunkedBody(tt.raw, tt.strict)
			if tt.wantErr {
				if err == nil {
					t.Errorf("accepted, body %q", body)
				}
				return
			}
			if err != nil || body != tt.body || trailer != tt.trailer {
				t.Errorf("got %q trailer %q err %v, want %q trailer %q", body, trailer, err, tt.body, tt.trailer)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		status  int
		cl      int64
		chunked bool
		keep    bool
		wantErr bool
	}{
		{name: "ok", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", status: 200, cl: 5, keep: true},
		{name: "no reason", raw: "HTTP/1.1 204\r\n\r\n", status: 204, cl: -1, keep: true},
		{name: "empty reason", raw: "HTTP/1.1 404 \r\n\r\n", status: 404, cl: -1, keep: true},
		{name: "bare LF from upstream", raw: "HTTP/1.1 200 OK\nContent-Length: 1\n\n", status: 200, cl: 1, keep: true},
		{name: "chunked", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", status: 200, cl: -1, chunked: true, keep: true},
		{name: "http/1.0", raw: "HTTP/1.0 200 OK\r\n\r\n", status: 200, cl: -1},
		{name: "http/1.0 keep-alive", raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", status: 200, cl: 0, keep: true},
		{name: "close", raw: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", status: 200, cl: -1},
		{name: "equal duplicate length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", status: 200, cl: 5, keep: true},
		{name: "differing lengths", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", wantErr: true},
		{name: "length and chunked", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: true},
		{name: "gzip encoding", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", wantErr: true},
		{name: "bad status", raw: "HTTP/1.1 2x0 OK\r\n\r\n", wantErr: true},
		{name: "status below 100", raw: "HTTP/1.1 099 X\r\n\r\n", wantErr: true},
		{name: "CR in value", raw: "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", wantErr: true},
		{name: "not http", raw: "ICY 200 OK\r\n\r\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := newTestRbuf(strings.NewReader(tt.raw), 64, 4096)
			head, err := rb.readHead(4096, false)
			if err != nil {
				t.Fatal(err)
			}
			var s h1resp
			err = parseResponse(head, &s)
			if tt.wantErr {
				if err == nil {
					t.Errorf("accepted: %+v", s)
				}
				return
			}
			if err != nil || s.status != tt.status || s.contentLength != tt.cl || s.chunked != tt.chunked || s.keepAlive() != tt.keep {
				t.Errorf("got %+v err %v", s, err)
			}
		})
	}
}

func TestDecodePath(t *testing.T) {
	tests := []struct {
		raw, want string
		ok        bool
	}{
		{"/a%20b", "/a b", true},
		{"/%2Fx", "//x", true},
		{"/%e2%9c%93", "/✓", true},
		{"/a%2", "", false},
		{"/a%zz", "", false},
		{"/a%", "", false},
	}
	for _, tt := range tests {
		got, ok := decodePath(nil, []byte(tt.raw))
		if ok != tt.ok || ok && string(got) != tt.want {
			t.Errorf("decodePath(%q) = %q, %v; want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzParseRequest feeds arbitrary bytes through the head reader, the
// request parser and a chunked body decoder. Beyond not panicking, an
// accepted request must have one unambiguous framing.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n",
		"GET http://h:1/p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rb := newTestRbuf(bytes.NewReader(data), 32, 4096+32)
		head, err := rb.readHead(4096, true)
		if err != nil {
			return
		}
		var q h1req
		if err := parseRequest(append([]byte(nil), head...), &q); err != nil {
			if statusOf(err) <= 0 {
				t.Fatalf("parse error without a status: %v", err)
			}
			return
		}
		if q.chunked && q.contentLength >= 0 {
			t.Fatal("accepted both Content-Length and chunked")
		}
		if q.chunked && q.minor == 0 {
			t.Fatal("accepted chunked in HTTP/1.0")
		}
		if !q.slash && (len(q.uri) == 0 || q.uri[0] != '/' && string(q.uri) != "*") {
			t.Fatalf("upstream target %q is not origin-form", q.uri)
		}
		if bytes.ContainsAny(q.uri, " \r\n\x00") || bytes.ContainsAny(q.host, " \r\n\x00/") {
			t.Fatalf("unsafe target %q or host %q", q.uri, q.host)
		}
		for _, fl := range q.fields {
			if bytes.ContainsAny(fl.value, "\r\n\x00") || !isToken(fl.name) {
				t.Fatalf("unsafe field %q: %q", fl.name, fl.value)
			}
		}
		if !q.chunked {
			return
		}
		var src bodySrc
		src.reset(rb, bodyChunked, 0, true, 1024)
		for range 10000 {
			p, err := src.next()
			if err != nil {
				return
			}
			if p == nil && rb.fill() != nil {
				return
			}
		}
	})
}
