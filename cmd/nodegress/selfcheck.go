package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// The agent's /healthz fails when a part that serves traffic is wedged:
// the sync loop, the datapath, or the proxy's accept loops; /readyz also
// waits for the first full sync.

// probeTimeout bounds one probe of a proxy listener.
const probeTimeout = 2 * time.Second

// agentHealth is what /healthz and /readyz check.
type agentHealth struct {
	syncLoop func() error // the controller's Health
	datapath func() error // the datapath's Check; nil without one
	synced   <-chan struct{}
	// listeners are the proxy's loopback listeners, probed as a client
	// would use them.
	listeners []proxyProbe
	// handedOver: another agent took this one's place. It is alive (its
	// kubelet must not restart it, which would take the node back) and
	// not ready.
	handedOver atomic.Bool
}

// proxyProbe is one proxy listener to probe.
type proxyProbe struct {
	name string
	addr string
	tls  bool
	// proxyHeader: the listener wants a PROXY header from loopback
	// (--proxy-protocol-from covers it): a LOCAL one is sent.
	proxyHeader bool
}

// live reports the first part found wedged.
func (h *agentHealth) live(ctx context.Context) error {
	if h.handedOver.Load() {
		return nil
	}
	if err := h.syncLoop(); err != nil {
		return err
	}
	if h.datapath != nil {
		if err := h.datapath(); err != nil {
			return fmt.Errorf("datapath: %w", err)
		}
	}
	// The proxy accepts from the first sync on; before, connections wait.
	select {
	case <-h.synced:
	default:
		return nil
	}
	for _, p := range h.listeners {
		if err := p.probe(ctx); err != nil {
			return fmt.Errorf("proxy %s listener: %w", p.name, err)
		}
	}
	return nil
}

// ready reports whether the node serves: synced once, and live.
func (h *agentHealth) ready(ctx context.Context) error {
	if h.handedOver.Load() {
		return errors.New("handed over to a new agent")
	}
	select {
	case <-h.synced:
	default:
		return errors.New("initial sync not done")
	}
	return h.live(ctx)
}

// h2Preface opens an HTTP/2 connection; a server answers with a SETTINGS
// frame (type 4) before any request, so the probe leaves no request in
// the access log.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")

// probe connects as a client does and waits for the listener's first
// answer: the HTTP/2 server's SETTINGS on the plain listener, a completed
// handshake on the TLS one. A listener whose accept loop or connection
// handling is stuck does not answer in time.
func (p proxyProbe) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if p.proxyHeader {
		h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
		if _, err := h.WriteTo(c); err != nil {
			return err
		}
	}
	if p.tls {
		return tls.Client(c, &tls.Config{ServerName: "healthz.nodegress.invalid", InsecureSkipVerify: true}).HandshakeContext(ctx) //nolint:gosec // only liveness is checked
	}
	if _, err := c.Write(h2Preface); err != nil {
		return err
	}
	var frame [9]byte
	if _, err := io.ReadFull(c, frame[:]); err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	if frame[3] != 0x4 || !bytes.Equal(frame[5:9], []byte{0, 0, 0, 0}) {
		return fmt.Errorf("answer is not an HTTP/2 SETTINGS frame: % x", frame)
	}
	return nil
}
