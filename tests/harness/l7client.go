package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"

	"github.com/nodegress/nodegress/tests/netns"
)

// Echo is a pod server's JSON answer on any path it has no other use for
// (see podserver's handler): the request as the pod received it.
type Echo struct {
	Pod       string      `json:"pod"`
	Client    string      `json:"client"`
	Method    string      `json:"method"`
	Host      string      `json:"host"`
	Path      string      `json:"path"`
	Query     string      `json:"query"`
	Proto     string      `json:"proto"`
	BodyBytes int64       `json:"body_bytes"`
	Headers   http.Header `json:"headers"`
	// Line is set when the pod answered with its Reply line (it does so
	// on path "/" only): then only Pod, Client and Path are known.
	Line bool `json:"-"`
}

// L7Response is a whole response, body read.
type L7Response struct {
	StatusCode int
	Proto      string
	ProtoMajor int
	Header     http.Header
	Trailer    http.Header
	Body       []byte
	// TLS is the connection's state on HTTPS, nil on HTTP.
	TLS *tls.ConnectionState
	// Echo is the parsed body when a pod server answered, nil when the
	// proxy itself did.
	Echo *Echo
}

func (r *L7Response) String() string {
	if r.Echo != nil {
		return fmt.Sprintf("%d %s from %s (path %s)", r.StatusCode, r.Proto, r.Echo.Pod, r.Echo.Path)
	}
	body := strings.TrimSpace(string(r.Body))
	if len(body) > 200 {
		body = body[:200] + "..."
	}
	return fmt.Sprintf("%d %s: %q", r.StatusCode, r.Proto, body)
}

// Pod returns the answering pod's name, or "" when no pod server echoed.
func (r *L7Response) Pod() string {
	if r.Echo == nil {
		return ""
	}
	return r.Echo.Pod
}

func newL7Response(resp *http.Response) (*L7Response, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read body (%s): %w", resp.Status, err)
	}
	r := &L7Response{
		StatusCode: resp.StatusCode,
		Proto:      resp.Proto,
		ProtoMajor: resp.ProtoMajor,
		Header:     resp.Header,
		Trailer:    resp.Trailer,
		Body:       body,
		TLS:        resp.TLS,
	}
	switch ct := resp.Header.Get("Content-Type"); {
	case strings.HasPrefix(ct, "application/json"):
		var e Echo
		if json.Unmarshal(body, &e) == nil && e.Pod != "" {
			r.Echo = &e
		}
	case strings.HasPrefix(ct, "text/plain") && resp.StatusCode == http.StatusOK:
		if rep, err := ParseReply(string(body)); err == nil {
			r.Echo = &Echo{Pod: rep.Pod, Client: rep.Client.String(), Path: "/", Line: true}
		}
	}
	return r, nil
}

// L7Options configure an L7Client.
type L7Options struct {
	// RootCAs verify HTTPS servers; nil verifies nothing (for tests that
	// inspect the certificate themselves).
	RootCAs *x509.CertPool
	// HTTP2 offers h2 by ALPN on HTTPS; otherwise only HTTP/1.1 is offered.
	HTTP2 bool
	// DisableKeepAlives makes every request a new connection.
	DisableKeepAlives bool
	// MaxConnsPerHost bounds the connections per host and port (0: no
	// bound); MaxIdleConnsPerHost defaults to it.
	MaxConnsPerHost int
	// Timeout bounds each request, body included, and each TLS
	// handshake; default RequestTimeout.
	Timeout time.Duration
}

// L7Client sends HTTP and HTTPS requests from a namespace to one address,
// whatever host the URL names, like `curl --connect-to`: the URL's host is
// the Host header and the TLS server name, the URL's port the destination
// port. Redirects are not followed.
type L7Client struct {
	ns        *netns.NS
	c         *http.Client
	transport *http.Transport
	dials     atomic.Int64
}

// NewL7Client returns a client in ns whose connections all go to target.
func NewL7Client(ns *netns.NS, target netip.Addr, o L7Options) *L7Client {
	cl := &L7Client{ns: ns}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cl.dials.Add(1)
		return ns.DialContext(ctx, network, net.JoinHostPort(target.String(), port))
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = RequestTimeout
	}
	tr := &http.Transport{
		DialContext:         dial,
		DisableKeepAlives:   o.DisableKeepAlives,
		MaxConnsPerHost:     o.MaxConnsPerHost,
		MaxIdleConnsPerHost: max(o.MaxConnsPerHost, 2),
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: timeout,
		TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, InsecureSkipVerify: o.RootCAs == nil},
		ForceAttemptHTTP2:   o.HTTP2,
	}
	if !o.HTTP2 {
		// A non-nil empty map turns HTTP/2 off.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	cl.transport = tr
	cl.c = &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return cl
}

// Dials tells how many connections the client opened. net/http silently
// retries an idempotent request on a new connection when a kept-alive one
// was closed under it, so a test about connections surviving must count
// them rather than rely on requests not failing.
func (c *L7Client) Dials() int64 { return c.dials.Load() }

// Do sends req and reads the whole response.
func (c *L7Client) Do(req *http.Request) (*L7Response, error) {
	resp, err := c.c.Do(req)
	if err != nil {
		return nil, err
	}
	return newL7Response(resp)
}

// Get sends a GET for url with the extra headers given as "Key", "value"
// pairs, and reads the whole response.
func (c *L7Client) Get(ctx context.Context, url string, headers ...string) (*L7Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return c.Do(req)
}

// Stream sends a GET for url and returns the response with its body unread,
// for streaming responses. The caller closes the body.
func (c *L7Client) Stream(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.c.Do(req)
}

// CloseIdle closes the client's idle connections.
func (c *L7Client) CloseIdle() { c.transport.CloseIdleConnections() }

// TLSHandshake opens a TLS connection from ns to addr offering serverName
// by SNI ("" offers none) and returns the connection's state. The server's
// certificate is not verified: the caller inspects it.
func TLSHandshake(ctx context.Context, ns *netns.NS, addr netip.AddrPort, serverName string) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	raw, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err := conn.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("tls handshake with %s (sni %q): %w", addr, serverName, err)
	}
	return conn.ConnectionState(), nil
}

// L7Conn is one kept-alive HTTP/1.1 connection with a fixed Host header,
// for tests about established connections through the proxy.
type L7Conn struct {
	conn net.Conn
	br   *bufio.Reader
	host string
}

// DialL7 opens a connection from ns to addr for requests to host.
func DialL7(ctx context.Context, ns *netns.NS, addr netip.AddrPort, host string) (*L7Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	conn, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return &L7Conn{conn: conn, br: bufio.NewReader(conn), host: host}, nil
}

// Get sends a GET for path on the connection and reads the response.
func (c *L7Conn) Get(ctx context.Context, path string) (*L7Response, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.host+path, nil)
	if err != nil {
		return nil, err
	}
	if err := req.Write(c.conn); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	r, err := newL7Response(resp)
	if err != nil {
		return nil, err
	}
	if resp.Close {
		return r, errors.New("the proxy closed the kept-alive connection (Connection: close)")
	}
	return r, nil
}

// Close closes the connection.
func (c *L7Conn) Close() error { return c.conn.Close() }

// WebSocket is a WebSocket client connection.
type WebSocket struct {
	ws   *websocket.Conn
	conn net.Conn
}

// DialWebSocket opens a WebSocket from ns through addr to ws://host/path.
func DialWebSocket(ctx context.Context, ns *netns.NS, addr netip.AddrPort, host, path string) (*WebSocket, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	conn, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	cfg, err := websocket.NewConfig("ws://"+host+path, "http://"+host)
	if err != nil {
		conn.Close()
		return nil, err
	}
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake for ws://%s%s via %s: %w", host, path, addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return &WebSocket{ws: ws, conn: conn}, nil
}

// Echo sends msg and returns the message that comes back.
func (w *WebSocket) Echo(msg string) (string, error) {
	_ = w.conn.SetDeadline(time.Now().Add(RequestTimeout))
	defer w.conn.SetDeadline(time.Time{})
	if err := websocket.Message.Send(w.ws, msg); err != nil {
		return "", fmt.Errorf("websocket send: %w", err)
	}
	var got string
	if err := websocket.Message.Receive(w.ws, &got); err != nil {
		return "", fmt.Errorf("websocket receive: %w", err)
	}
	return got, nil
}

// Close closes the WebSocket.
func (w *WebSocket) Close() error { return w.ws.Close() }

// Metric is one sample of a Prometheus text exposition.
type Metric struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ParseMetrics reads the samples of a Prometheus text exposition (comments
// skipped). It understands what client_golang writes: label values quoted
// with \\, \" and \n escapes, no timestamps needed.
func ParseMetrics(text []byte) ([]Metric, error) {
	var out []Metric
	for ln, line := range bytes.Split(text, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		m, err := parseMetricLine(s)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %q: %w", ln+1, s, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMetricLine(s string) (Metric, error) {
	m := Metric{Labels: map[string]string{}}
	i := strings.IndexAny(s, "{ ")
	if i <= 0 {
		return m, errors.New("no metric name")
	}
	m.Name = s[:i]
	s = s[i:]
	if s[0] == '{' {
		s = s[1:]
		for {
			s = strings.TrimLeft(s, ", ")
			if strings.HasPrefix(s, "}") {
				s = s[1:]
				break
			}
			eq := strings.Index(s, `="`)
			if eq <= 0 {
				return m, errors.New("malformed label")
			}
			name := s[:eq]
			s = s[eq+2:]
			var v strings.Builder
			closed := false
			for j := 0; j < len(s); j++ {
				c := s[j]
				if c == '\\' && j+1 < len(s) {
					j++
					if s[j] == 'n' {
						v.WriteByte('\n')
					} else {
						v.WriteByte(s[j])
					}
					continue
				}
				if c == '"' {
					s = s[j+1:]
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return m, errors.New("unterminated label value")
			}
			m.Labels[name] = v.String()
		}
	}
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return m, errors.New("no value")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return m, fmt.Errorf("value: %w", err)
	}
	m.Value = v
	return m, nil
}
