package l7proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Error pages (ingress-nginx's custom-http-errors with default-backend):
// an upstream answer whose status the route lists is dropped, and the
// client gets the default backend's answer to a GET of the same URI
// carrying ingress-nginx's X-Code, X-Format, X-Original-URI, X-Namespace,
// X-Ingress-Name, X-Service-Name, X-Service-Port and X-Request-ID fields.
// The default backend chooses the status (ingress-nginx's custom error
// backends answer with X-Code). When it cannot be reached the client gets
// the original status with the proxy's own short body.

// maxErrorPage bounds an error page's body.
const maxErrorPage = 1 << 20

// errorPage reports whether an upstream status is replaced by an error
// page.
func (tx *txn) errorPage(code int) bool {
	a := tx.access.acc
	return a != nil && a.DefaultUpstream != "" && !tx.access.atDefault && slices.Contains(a.ErrorCodes, code)
}

// bodyResponder writes a complete local answer with a body.
type bodyResponder interface {
	respondBody(code int, fields []Field, body []byte)
}

// serveErrorPage answers a request whose upstream answered code with the
// default backend's page.
func (p *Proxy) serveErrorPage(c client, tx *txn, code int) {
	req, ok := c.(routedRequest)
	br, ok2 := c.(bodyResponder)
	if !ok || !ok2 {
		c.fail(errNoErrorPage, nil)
		return
	}
	status, fields, body := p.fetchErrorPage(tx, req, code)
	br.respondBody(status, fields, body)
}

var errNoErrorPage = errors.New("client side cannot answer an error page")

func (p *Proxy) fetchErrorPage(tx *txn, req routedRequest, code int) (int, []Field, []byte) {
	fallback := func() (int, []Field, []byte) {
		return code, []Field{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}, errorBody(code)
	}
	a := tx.access.acc
	pl := p.state.Load().pools[a.DefaultUpstream]
	if pl == nil {
		return fallback()
	}
	ep := pl.pick(nil)
	if ep == nil {
		return fallback()
	}
	ep.acquire()
	defer ep.release()
	uri := tx.requestURI(req)
	ctx, cancel := context.WithTimeout(context.Background(), defaultAuthTimeout)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, pl.scheme+"://"+ep.hostport+uri, nil)
	if err != nil {
		return fallback()
	}
	if v, ok := req.headerValue("Host"); ok {
		r.Host = v
	}
	for _, f := range errorPageFields(tx, req, code) {
		r.Header[f.Name] = []string{f.Value}
	}
	r.Header["X-Original-Uri"] = []string{uri}
	r.Header[hdrXFF] = []string{tx.access.client.String()}
	res, err := ep.rt.RoundTrip(r)
	if err != nil {
		p.log.Debug("error page unavailable", "ingress", tx.ingress, "backend", ep.hostport, "err", err)
		return fallback()
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxErrorPage+1))
	if err != nil || len(body) > maxErrorPage {
		return fallback()
	}
	var fields []Field
	for _, k := range []string{"Content-Type", "Cache-Control"} {
		if v := res.Header.Get(k); v != "" {
			fields = append(fields, Field{Name: k, Value: v})
		}
	}
	return res.StatusCode, fields, body
}

// errorPageFields are the fields ingress-nginx sends its default backend
// about the request and the status it stands in for.
func errorPageFields(tx *txn, req routedRequest, code int) []Field {
	ns, name, _ := strings.Cut(tx.ingress, "/")
	accept, _ := req.headerValue("Accept")
	reqID, ok := req.headerValue("X-Request-Id")
	if !ok {
		var b [16]byte
		_, _ = rand.Read(b[:])
		reqID = hex.EncodeToString(b[:])
	}
	var svc, port string
	if tx.up != nil {
		svc, port = tx.up.Service, tx.up.Port
	}
	return []Field{
		{"X-Code", strconv.Itoa(code)},
		{"X-Format", accept},
		{"X-Namespace", ns},
		{"X-Ingress-Name", name},
		{"X-Service-Name", svc},
		{"X-Service-Port", port},
		{"X-Request-Id", reqID},
	}
}

// respondBody writes a complete answer on an HTTP/1.x connection.
func (hc *h1conn) respondBody(code int, fields []Field, body []byte) {
	hc.keepIfDiscardable()
	tx := &hc.tx
	tx.status, hc.st.wroteHead = code, true
	hc.writeStatusLine(code)
	for _, f := range fields {
		writeFieldLines(hc.w, f.Name, []string{f.Value})
	}
	tx.responseEdit().write(hc.w)
	hc.writeDate()
	hc.writeContentLength(int64(len(body)))
	hc.writeConnection()
	_, _ = hc.w.WriteString("\r\n")
	if string(hc.req.method) != http.MethodHead {
		_, _ = hc.w.Write(body)
		tx.bytes = int64(len(body))
	}
}

// respondBody writes a complete answer on an HTTP/2 stream.
func (s *h2stream) respondBody(code int, fields []Field, body []byte) {
	h := s.Header()
	for _, f := range fields {
		h[f.Name] = []string{f.Value}
	}
	s.tx.responseEdit().apply(h)
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	s.WriteHeader(code)
	if s.r.Method != http.MethodHead {
		_, _ = s.Write(body)
	}
}
