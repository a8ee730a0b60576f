package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/nodegress/nodegress/tests/netns"
)

// RequestTimeout bounds one request: connect, send, and read the answer.
const RequestTimeout = 2 * time.Second

// Reply is a pod server's answer: which pod answered and the client address
// it saw.
type Reply struct {
	Pod    string
	Client netip.Addr
}

func (r Reply) String() string { return fmt.Sprintf("pod=%s client=%s", r.Pod, r.Client) }

// ParseReply parses "pod=NAME client=IP".
func ParseReply(s string) (Reply, error) {
	var r Reply
	var pod, client string
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pod":
			pod = v
		case "client":
			client = v
		}
	}
	if pod == "" || client == "" {
		return r, fmt.Errorf("malformed reply %q", s)
	}
	addr, err := netip.ParseAddr(client)
	if err != nil {
		return r, fmt.Errorf("malformed reply %q: %w", s, err)
	}
	return Reply{Pod: pod, Client: addr}, nil
}

// HTTPGet opens a new TCP connection from ns to addr, sends one GET and
// returns the parsed answer. Every call is a new connection, so every call
// is a new flow for the datapath to balance.
func HTTPGet(ctx context.Context, ns *netns.NS, addr netip.AddrPort) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	conn, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	c := &HTTPConn{conn: conn, br: bufio.NewReader(conn), addr: addr}
	r, err := c.get(ctx, true)
	if err != nil {
		return r, err
	}
	// Let the server close first: the side that closes first keeps the
	// 4-tuple in TIME_WAIT, and the caller wants to reuse its source port.
	_ = conn.SetReadDeadline(time.Now().Add(RequestTimeout))
	_, _ = io.Copy(io.Discard, c.br)
	return r, nil
}

// HTTPGetFrom is HTTPGet from a fixed local address and port, bound with
// SO_REUSEADDR so consecutive calls can reuse the port once the previous
// connection is closed.
func HTTPGetFrom(ctx context.Context, ns *netns.NS, local, addr netip.AddrPort) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	d := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(local),
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			})
			return errors.Join(err, serr)
		},
	}
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	})
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	c := &HTTPConn{conn: conn, br: bufio.NewReader(conn), addr: addr}
	r, err := c.get(ctx, true)
	if err != nil {
		return r, err
	}
	// Let the server close first: the side that closes first keeps the
	// 4-tuple in TIME_WAIT, and the caller wants to reuse its source port.
	_ = conn.SetReadDeadline(time.Now().Add(RequestTimeout))
	_, _ = io.Copy(io.Discard, c.br)
	return r, nil
}

// HTTPConn is one kept-alive HTTP connection, for tests about established
// flows.
type HTTPConn struct {
	conn net.Conn
	br   *bufio.Reader
	addr netip.AddrPort
}

// DialHTTP opens a connection from ns to addr for repeated requests.
func DialHTTP(ctx context.Context, ns *netns.NS, addr netip.AddrPort) (*HTTPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	conn, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return &HTTPConn{conn: conn, br: bufio.NewReader(conn), addr: addr}, nil
}

// Get sends one request on the connection and returns the answer.
func (c *HTTPConn) Get(ctx context.Context) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	return c.get(ctx, false)
}

// Close closes the connection.
func (c *HTTPConn) Close() error { return c.conn.Close() }

func (c *HTTPConn) get(ctx context.Context, closeAfter bool) (Reply, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr.String()+"/", nil)
	if err != nil {
		return Reply{}, err
	}
	req.Close = closeAfter
	if err := req.Write(c.conn); err != nil {
		return Reply{}, fmt.Errorf("send request to %s: %w", c.addr, err)
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return Reply{}, fmt.Errorf("read response from %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, fmt.Errorf("read body from %s: %w", c.addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Reply{}, fmt.Errorf("%s answered %s: %s", c.addr, resp.Status, body)
	}
	return ParseReply(string(body))
}

// UDPRequest sends msg from a new socket in ns to addr and returns the
// parsed answer. Every call uses a new source port, so a new flow.
func UDPRequest(ctx context.Context, ns *netns.NS, addr netip.AddrPort, msg string) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	conn, err := ns.DialContext(ctx, "udp", addr.String())
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	if _, err := conn.Write([]byte(msg)); err != nil {
		return Reply{}, fmt.Errorf("send to %s: %w", addr, err)
	}
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil {
		return Reply{}, fmt.Errorf("receive from %s: %w", addr, err)
	}
	return ParseReply(string(buf[:n]))
}

// Eventually calls fn every interval until it returns nil, and returns the
// last error if timeout passes first.
func Eventually(timeout, interval time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// BulkTimeout bounds one bulk transfer.
const BulkTimeout = 20 * time.Second

// HTTPDownload fetches size bytes from the pod server's /data on a new
// connection and checks them against the pattern podserver sends (byte i is
// i mod 251). It returns the answer from the X-Reply header.
func HTTPDownload(ctx context.Context, ns *netns.NS, addr netip.AddrPort, size int64) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, BulkTimeout)
	defer cancel()
	resp, err := bulkClient(ns).Get(ctx, fmt.Sprintf("http://%s/data?size=%d", addr, size))
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Reply{}, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := resp.Body.Read(buf)
		for i := range n {
			if buf[i] != byte((off+int64(i))%251) {
				return Reply{}, fmt.Errorf("download from %s: byte %d is %d, want %d", addr, off+int64(i), buf[i], (off+int64(i))%251)
			}
		}
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return Reply{}, fmt.Errorf("download from %s after %d bytes: %w", addr, off, err)
		}
	}
	if off != size {
		return Reply{}, fmt.Errorf("download from %s: got %d bytes, want %d", addr, off, size)
	}
	return ParseReply(resp.Header.Get("X-Reply"))
}

// HTTPUpload posts data to the pod server's /upload on a new connection and
// checks the length and SHA-256 the pod reports.
func HTTPUpload(ctx context.Context, ns *netns.NS, addr netip.AddrPort, data []byte) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, BulkTimeout)
	defer cancel()
	resp, err := bulkClient(ns).Post(ctx, "http://"+addr.String()+"/upload", bytes.NewReader(data))
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, fmt.Errorf("read answer from %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Reply{}, fmt.Errorf("%s answered %s: %s", addr, resp.Status, body)
	}
	want := fmt.Sprintf(" bytes=%d sha256=%x", len(data), sha256.Sum256(data))
	if !strings.Contains(string(body), want) {
		return Reply{}, fmt.Errorf("upload to %s: pod reported %q, want%s", addr, strings.TrimSpace(string(body)), want)
	}
	return ParseReply(string(body))
}

// ctxClient is an HTTP client whose connections are dialled inside a
// namespace, one connection per request.
type ctxClient struct{ c *http.Client }

func bulkClient(ns *netns.NS) ctxClient {
	return ctxClient{&http.Client{Transport: &http.Transport{
		DialContext:       ns.DialContext,
		DisableKeepAlives: true,
	}}}
}

func (c ctxClient) Get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.c.Do(req)
}

func (c ctxClient) Post(ctx context.Context, url string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	return c.c.Do(req)
}
