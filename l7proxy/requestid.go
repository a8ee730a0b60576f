package l7proxy

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"net/http"
	"strings"
	"sync/atomic"
)

// hdrRequestID is the canonical key of the request ID field.
const hdrRequestID = "X-Request-Id"

// maxRequestIDLen bounds a request ID taken from a trusted peer; a longer
// value is replaced by a generated one rather than carried into every log.
const maxRequestIDLen = 128

// requestIDLen is the length of a generated ID: 128 bits in hex.
const requestIDLen = 32

// requestIDPrefix makes generated IDs unique across processes and nodes;
// requestIDCounter across the requests of this process. A prefix and a
// counter cost one atomic add per request where 128 random bits would
// cost a read of the random source.
var (
	requestIDPrefix  = randomUint64()
	requestIDCounter atomic.Uint64
)

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return binary.BigEndian.Uint64(b[:])
}

// requestID is one request's ID: the X-Request-ID a trusted peer sent
// (the same trust rule as the forwarded headers), or one generated the
// first time it is needed, so a request answered without logging or
// tracing costs nothing. It lives in the txn, so generating it does not
// allocate.
type requestID struct {
	// given is a trusted peer's value; it may view the request's buffers.
	given string
	gen   [requestIDLen]byte
	// generated tells gen is filled.
	generated bool
}

// take keeps a trusted peer's value when it is one a log line can carry:
// visible ASCII, not too long. The first value wins.
func (r *requestID) take(v string) {
	if r.given != "" || !validRequestID(v) {
		return
	}
	r.given = v
}

// takeHeader keeps a trusted peer's X-Request-ID from a header map.
func (r *requestID) takeHeader(h http.Header) {
	if vv := h[hdrRequestID]; len(vv) > 0 {
		r.take(vv[0])
	}
}

// takeFields keeps a trusted peer's X-Request-ID from parsed HTTP/1.x
// fields.
func (r *requestID) takeFields(fields []hfield) {
	for i := range fields {
		if f := &fields[i]; isRequestIDField(f.name) {
			r.take(bstr(f.value))
			return
		}
	}
}

func validRequestID(v string) bool {
	if v == "" || len(v) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// isRequestIDField reports an X-Request-ID field name, in any case.
func isRequestIDField(name []byte) bool {
	return len(name) == len(hdrRequestID) && equalFold(name, "x-request-id")
}

// view returns the ID as a string that is only valid while the txn is:
// for the access log line and the field sent upstream.
func (r *requestID) view() string {
	if r.given != "" {
		return r.given
	}
	if !r.generated {
		n := requestIDCounter.Add(1)
		appendHex64(appendHex64(r.gen[:0], requestIDPrefix), n)
		r.generated = true
	}
	return bstr(r.gen[:])
}

// String returns the ID as a string of its own.
func (r *requestID) String() string {
	return strings.Clone(r.view())
}

func appendHex64(b []byte, v uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(v>>uint(shift))&0xf])
	}
	return b
}

// writeField writes the ID as an HTTP/1.1 field line, the client's own
// X-Request-ID having been left out of the copied fields.
func (r *requestID) writeField(w *bufio.Writer) {
	_, _ = w.WriteString("X-Request-Id: ")
	_, _ = w.WriteString(r.view())
	_, _ = w.WriteString("\r\n")
}

// setHeader sets the ID in a header map, replacing what the client sent.
func (r *requestID) setHeader(h http.Header) {
	h[hdrRequestID] = []string{r.String()}
}
