package l7proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Upstreams spoken to over h2c (gRPC) or TLS go through an http.Transport
// per endpoint, which pools and multiplexes their connections.

// connectError marks a failure to establish the TCP connection, the only
// failure after which a request certainly did not reach the endpoint.
// local is the address it was dialled from, when known (a watched dial
// binds before connecting).
type connectError struct {
	err   error
	local netip.AddrPort
}

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

func isConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

// dialedLocal is the local address of a failed connect; zero when unknown.
func dialedLocal(err error) netip.AddrPort {
	var ce *connectError
	if errors.As(err, &ce) {
		return ce.local
	}
	return netip.AddrPort{}
}

func newTransport(s poolSettings, maxHeaderBytes int) *http.Transport {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, u, err := s.watch.dial(ctx, s.connectTimeout, addr)
			if err != nil {
				return nil, err
			}
			c = registered(c, u)
			if s.sendTimeout > 0 {
				return &writeTimeoutConn{Conn: c, timeout: s.sendTimeout}, nil
			}
			return c, nil
		},
		MaxIdleConnsPerHost:    maxIdlePerEndpoint,
		IdleConnTimeout:        s.idleTimeout,
		ResponseHeaderTimeout:  s.readTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: int64(max(maxHeaderBytes, 64<<10)),
		// A proxy forwards encodings as they are; the transport must not
		// add Accept-Encoding and decompress behind the client's back.
		DisableCompression: true,
		// Pods rarely have certificates valid for their IPs; like other
		// ingress controllers the proxy encrypts without verifying.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
		Protocols:       new(http.Protocols),
	}
	switch s.protocol {
	case ProtocolH2C:
		t.Protocols.SetUnencryptedHTTP2(true)
	case ProtocolHTTPS:
		if s.tlsConf != nil {
			t.TLSClientConfig = s.tlsConf
		}
		t.Protocols.SetHTTP1(true)
		t.Protocols.SetHTTP2(true)
		t.TLSHandshakeTimeout = s.connectTimeout
	default:
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// exchangeTransport runs one request/response with ep through its
// Transport. The Transport replaces stale connections itself; a failed
// connect goes back to the attempt loop.
func (p *Proxy) exchangeTransport(c client, tx *txn, ep *endpoint) (outcome, error) {
	req, err := c.transportRequest()
	if err != nil {
		c.fail(err, nil)
		return outcomeDone, err
	}
	if tx.retries > 0 {
		// An earlier attempt's transport may still read its request
		// (an HTTP/2 stream winding down): this one gets its own, with
		// the body kept for it when the earlier one read the client's.
		r2, u := *req, *req.URL
		r2.URL = &u
		if tx.replay.isWhole() {
			r2.Body = tx.replay.reader()
		}
		req = &r2
	}
	req.URL.Scheme = tx.pool.scheme
	req.URL.Host = ep.hostport
	tx.upstreamStart = time.Now()
	if d := tx.responseDeadline(tx.pool.settings.readTimeout); !tx.deadline.IsZero() || tx.backendTimeout > 0 {
		// A Gateway rule's timeouts: the whole exchange, body included.
		ctx, cancel := context.WithDeadline(req.Context(), d)
		defer cancel()
		req = req.WithContext(ctx)
	}
	if p.tracingRequests() {
		req = tx.traceConn(req)
	}
	res, err := ep.rt.RoundTrip(req)
	if err != nil {
		if isConnectError(err) {
			// The record names the connection that failed (the
			// transport hands a dial's error to the request that
			// asked for the dial).
			tx.upLocal = dialedLocal(err)
			return outcomeRefused, err
		}
		if tx.canRetry(c) {
			return outcomeRetry, err
		}
		c.fail(err, c.bodyError())
		return outcomeDone, err
	}
	if tx.retry != nil && tx.retryStatus(c, res.StatusCode) {
		_ = res.Body.Close()
		return outcomeRetry, errRetryStatus
	}
	if tx.access.acc != nil && tx.errorPage(res.StatusCode) {
		_ = res.Body.Close()
		p.serveErrorPage(c, tx, res.StatusCode)
		return outcomeDone, nil
	}
	c.respondTransport(res)
	return outcomeDone, nil
}
