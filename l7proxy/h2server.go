package l7proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 server of the client side (RFC 9113), for TLS connections
// that negotiate h2 and plain ones opening with the preface (h2c with
// prior knowledge). Each stream goes straight into the request pipeline
// (client_h2.go) without net/http: per connection one reader goroutine
// (frames in, HPACK decoding, flow control, limits) and one flusher
// goroutine writing what the streams queued into one buffer, so that the
// responses of many streams leave in one write; per stream one goroutine
// running the pipeline, with its state pooled. Frames are parsed and
// written here rather than with http2.Framer: the server needs a handful
// of frame types, and owning them keeps the hot path free of allocations.

// Frame types and flags (RFC 9113 §6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// h2Code is an HTTP/2 error code (RFC 9113 §7).
type h2Code uint32

const (
	codeNo                      h2Code = 0x0
	codeProtocol                h2Code = 0x1
	codeInternal                h2Code = 0x2
	codeFlowControl             h2Code = 0x3
	codeSettingsTimeout         h2Code = 0x4
	codeStreamClosed            h2Code = 0x5
	codeFrameSize               h2Code = 0x6
	codeRefusedStream           h2Code = 0x7
	codeCancel                  h2Code = 0x8
	codeCompression             h2Code = 0x9
	codeEnhanceYourCalm         h2Code = 0xb
	codeHTTP11Required          h2Code = 0xd
	settingHeaderTableSize             = 0x1
	settingEnablePush                  = 0x2
	settingMaxConcurrentStreams        = 0x3
	settingInitialWindowSize           = 0x4
	settingMaxFrameSize                = 0x5
	settingMaxHeaderListSize           = 0x6
)

// connError ends the connection with a GOAWAY; streamError resets one
// stream.
type connError struct {
	code h2Code
	why  string
}

func (e connError) Error() string { return fmt.Sprintf("http2 connection error %d: %s", e.code, e.why) }

// Limits of the server. The windows bound what one connection buffers of
// request bodies: a stream at most h2StreamWindow, all of them together
// h2ConnWindow.
const (
	h2MaxFrameSize   = 16384
	h2MaxStreams     = 250
	h2StreamWindow   = 256 << 10
	h2ConnWindow     = 1 << 20
	h2DefaultWindow  = 65535
	h2MaxWindow      = 1<<31 - 1
	h2HeaderTableMax = 4096
	// h2WriteSoftMax: DATA frames wait while the connection's write
	// buffer holds more (backpressure from a slow client);
	// h2WriteHardMax: a client that makes the server queue more control
	// frames than that (PING, SETTINGS acks) without reading is cut off.
	h2WriteSoftMax = 64 << 10
	h2WriteHardMax = 1 << 20
	// h2MaxContinuations bounds the frames of one header block
	// (CONTINUATION floods, CVE-2024-27316), next to the size limit.
	h2MaxContinuations = 64
	// Per second and connection: client resets of running streams
	// (rapid reset, CVE-2023-44487) and frames that cost work without
	// carrying any (PING, SETTINGS, PRIORITY, empty DATA and
	// CONTINUATION frames). Over either, the connection gets
	// ENHANCE_YOUR_CALM.
	h2MaxResetsPerSec = 200
	h2MaxChurnPerSec  = 1000
	// drainAckTimeout bounds the wait for the ack of a graceful
	// shutdown's PING before the final GOAWAY goes out anyway.
	drainAckTimeout = time.Second
	// h2ClosedMemory is how many closed stream ids are remembered, to
	// tell frames on a closed stream from frames on a skipped one.
	h2ClosedMemory = 64
)

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// h2server tracks the HTTP/2 connections for Shutdown.
type h2server struct {
	p       *Proxy
	mu      sync.Mutex
	closing bool
	conns   map[*h2conn]struct{}
}

func newH2Server(p *Proxy) *h2server {
	return &h2server{p: p, conns: map[*h2conn]struct{}{}}
}

// floodMeter counts events per second.
type floodMeter struct {
	start int64
	n     int
}

// hit counts one event and reports whether more than limit happened in
// the current second.
func (m *floodMeter) hit(limit int) bool {
	now := time.Now().UnixNano()
	if now-m.start > int64(time.Second) {
		m.start, m.n = now, 0
	}
	m.n++
	return m.n > limit
}

// h2conn is one HTTP/2 client connection.
type h2conn struct {
	srv  *h2server
	p    *Proxy
	conn net.Conn
	ci   *connInfo
	br   *bufio.Reader

	// Reader goroutine only.
	hdr      [9]byte
	hdec     *hpack.Decoder
	block    headerBlock
	maxID    uint32 // highest client stream id seen
	resets   floodMeter
	churn    floodMeter
	canon    map[string]string // lower-case name → canonical, per connection
	sawFirst bool              // the client's first SETTINGS

	mu   sync.Mutex
	cond *sync.Cond // window changes, write buffer drained, streams reset, closing
	// fcond wakes the flusher.
	fcond *sync.Cond
	// streams are the open streams; closed the ids of recently closed
	// ones (ring) and whether the server reset them.
	streams    map[uint32]*h2srvStream
	closed     [h2ClosedMemory]closedStream
	closedNext int
	active     int // streams whose pipeline goroutine runs
	// Flow control: what the connection may still send, and the
	// consumed request bytes not yet given back to the client.
	sendWindow  int64
	recvWindow  int64
	recvUnacked int64
	// The client's settings.
	peerInitWindow int64
	peerMaxFrame   int
	// Writing: frames are appended to wbuf under mu; the flusher swaps it
	// with spare and writes it.
	wbuf, spare []byte
	flusherIdle bool
	flushing    bool
	// flushGaveUp: linger stopped waiting for the queued frames.
	flushGaveUp bool
	henc        *hpack.Encoder
	hbuf        headerBuf
	lower       map[string]string // canonical name → lower case, per connection
	// names and values are the response fields' strings for HPACK.
	names, values internTable
	// goingAway: a GOAWAY was sent, no new stream is taken; dead: the
	// connection is broken or closed, nothing more is written.
	goingAway bool
	// goAwayAtStart: the server was shutting down when the connection
	// arrived.
	goAwayAtStart bool
	lastID        uint32 // the GOAWAY's last stream id
	// drainPinged: the first GOAWAY of a graceful shutdown (every stream
	// id) and its PING were sent; the final GOAWAY follows the PING's
	// ack or drainTimer.
	drainPinged bool
	drainTimer  *time.Timer
	// wokenToClose: the reader was woken by a past read deadline because
	// the connection ended gracefully, not because the client was slow.
	wokenToClose bool
	dead         bool
	werr         error
	idleSet      bool // the read deadline is the idle timeout
	// idleCounted: the connection counts among its client's idle
	// connections (connLimits), as an HTTP/1.x one waiting for a request.
	idleCounted bool
	peer        netip.Addr
	handlers    sync.WaitGroup
	done        chan struct{} // closed when the flusher ended
}

type closedStream struct {
	id    uint32
	reset bool // the server reset it: frames on it are ignored
}

// headerBuf collects an encoded header block.
type headerBuf struct{ b []byte }

func (h *headerBuf) Write(p []byte) (int, error) {
	h.b = append(h.b, p...)
	return len(p), nil
}

// serveConn serves an HTTP/2 connection until it closes. The client's
// preface has not been read yet (for h2c it is replayed).
func (s *h2server) serveConn(nc net.Conn, isTLS bool, tracked func()) {
	p := s.p
	c := &h2conn{
		srv: s, p: p, conn: nc, ci: newConnInfo(nc, isTLS, p.opts.TrustedProxies), peer: peerAddr(nc),
		streams:        make(map[uint32]*h2srvStream),
		sendWindow:     h2DefaultWindow,
		recvWindow:     h2ConnWindow,
		peerInitWindow: h2DefaultWindow,
		peerMaxFrame:   16384,
		done:           make(chan struct{}),
	}
	c.cond = sync.NewCond(&c.mu)
	c.fcond = sync.NewCond(&c.mu)
	// Our settings and the larger connection window are queued before the
	// connection is registered, where a shutdown may queue its GOAWAY:
	// SETTINGS must be the first frame. They go out as soon as the
	// flusher starts; the client's preface and SETTINGS must arrive
	// within the header timeout.
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.wbuf = make([]byte, 0, 4<<10)
	c.spare = make([]byte, 0, 4<<10)
	c.writeSettings()
	c.writeWindowUpdate(0, h2ConnWindow-h2DefaultWindow)
	// A connection accepted before a shutdown began but handed over
	// after it (a TLS handshake that was under way) is told to go away
	// at once, not closed unanswered: its client sends its requests
	// again elsewhere (during a handover, to the agent taking over).
	s.mu.Lock()
	c.goAwayAtStart = s.closing
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if tracked != nil {
		tracked()
	}
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.serve()
}

// h2ReadBufs hold a whole frame of the largest size read, so that its
// payload is used where it was read.
var h2ReadBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h2MaxFrameSize+9) }}

func (c *h2conn) serve() {
	o := &c.p.opts
	c.br = h2ReadBufs.Get().(*bufio.Reader)
	c.br.Reset(c.conn)
	c.hdec = hpack.NewDecoder(h2HeaderTableMax, c.onField)
	// A string over the header list limit is still decoded (and the
	// request answered 431), up to where the block counts as a flood.
	c.hdec.SetMaxStringLength(4 * o.MaxHeaderBytes)
	go c.flusher()
	_ = c.conn.SetReadDeadline(time.Now().Add(o.ReadHeaderTimeout))
	if c.goAwayAtStart {
		c.startGoAway()
	}
	err := c.readPreface()
	if err == nil {
		err = c.readLoop()
	}
	if err != nil && c.endedGracefully(err) {
		err = nil
	}
	if err == nil {
		c.linger(0)
	}
	var ce connError
	if errors.As(err, &ce) {
		c.p.log.Debug("http2 connection error", "peer", c.ci.peerStr, "code", ce.code, "err", ce.why)
		c.mu.Lock()
		c.writeGoAway(ce.code)
		c.mu.Unlock()
		// The client that broke the protocol (a flood) may still be
		// sending: closing with its bytes unread would reset the
		// connection and could destroy the GOAWAY that says why. Its
		// wait is short: such a client gets no more of the server.
		c.linger(lingerTimeout)
	}
	c.shut()
	c.handlers.Wait()
	<-c.done
	c.br.Reset(nil)
	h2ReadBufs.Put(c.br)
}

func (c *h2conn) readPreface() error {
	var b [24]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return err
	}
	if string(b[:]) != string(h2Preface) {
		return connError{codeProtocol, "bad preface"}
	}
	return nil
}

// readLoop reads and handles frames until the connection fails or ends.
func (c *h2conn) readLoop() error {
	for {
		typ, flags, sid, payload, err := c.readFrame()
		if err != nil {
			return err
		}
		if !c.sawFirst {
			if typ != frameSettings || flags&flagAck != 0 {
				return connError{codeProtocol, "first frame is not SETTINGS"}
			}
			c.sawFirst = true
			c.mu.Lock()
			c.setIdleDeadline()
			c.mu.Unlock()
		}
		if c.block.sid != 0 && typ != frameContinuation {
			return connError{codeProtocol, "header block interrupted"}
		}
		err = c.handleFrame(typ, flags, sid, payload)
		_, _ = c.br.Discard(len(payload))
		if err != nil {
			return err
		}
		if done, err := c.finished(); done || err != nil {
			return err
		}
	}
}

// linger ends a connection after its GOAWAY: while the queued frames are
// written, and for a moment after, what the client still sends (the rest
// of an upload the server answered early, a flood) is read and dropped, so
// that closing does not turn into a reset that destroys the last frames
// before the client read them, and a client still sending cannot stall
// their write by filling the server's receive window. flushWait bounds
// the wait for the writes (0: until written or failed, within the write
// timeout).
func (c *h2conn) linger(flushWait time.Duration) {
	_ = c.conn.SetReadDeadline(time.Time{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		// A client may have a whole connection window in flight.
		_, _ = io.CopyN(io.Discard, c.br, h2ConnWindow+lingerMax)
	}()
	if flushWait > 0 {
		t := time.AfterFunc(flushWait, func() {
			c.mu.Lock()
			c.flushGaveUp = true
			c.cond.Broadcast()
			c.mu.Unlock()
		})
		defer t.Stop()
	}
	c.mu.Lock()
	for (len(c.wbuf) > 0 || c.flushing) && c.werr == nil && !c.flushGaveUp {
		c.cond.Wait()
	}
	c.mu.Unlock()
	_ = c.conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	<-drained
}

// readFrame reads one frame's header and returns its payload in place in
// the read buffer (valid until the caller discards it: handlers copy what
// they keep).
func (c *h2conn) readFrame() (typ, flags byte, sid uint32, payload []byte, err error) {
	if _, err = io.ReadFull(c.br, c.hdr[:]); err != nil {
		return
	}
	n := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
	typ, flags = c.hdr[3], c.hdr[4]
	sid = binary.BigEndian.Uint32(c.hdr[5:]) & 0x7fffffff
	if n > h2MaxFrameSize {
		return 0, 0, 0, nil, connError{codeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"}
	}
	payload, err = c.br.Peek(n)
	return
}

// finished reports whether a connection going away has no stream left,
// or fails a client that makes the server queue frames (RST_STREAM
// answers to bad requests, acknowledgements) faster than it reads them.
func (c *h2conn) finished() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.controlRoom(); err != nil {
		return false, err
	}
	return c.dead || c.goingAway && c.active == 0 && len(c.streams) == 0, nil
}

func (c *h2conn) handleFrame(typ, flags byte, sid uint32, p []byte) error {
	switch typ {
	case frameData:
		return c.onData(flags, sid, p)
	case frameHeaders:
		return c.onHeaders(flags, sid, p)
	case framePriority:
		if sid == 0 {
			return connError{codeProtocol, "PRIORITY on stream 0"}
		}
		if len(p) != 5 {
			c.resetStream(sid, codeFrameSize)
			return nil
		}
		if binary.BigEndian.Uint32(p)&0x7fffffff == sid {
			c.resetStream(sid, codeProtocol)
			return nil
		}
		return c.count(&c.churn, h2MaxChurnPerSec)
	case frameRSTStream:
		return c.onRSTStream(sid, p)
	case frameSettings:
		return c.onSettings(flags, sid, p)
	case framePushPromise:
		return connError{codeProtocol, "PUSH_PROMISE from a client"}
	case framePing:
		if sid != 0 {
			return connError{codeProtocol, "PING on a stream"}
		}
		if len(p) != 8 {
			return connError{codeFrameSize, "PING length"}
		}
		if flags&flagAck != 0 {
			if string(p) == drainPingData && c.drainStarted() {
				c.finishGoAway()
			}
			return nil
		}
		if err := c.count(&c.churn, h2MaxChurnPerSec); err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.controlRoom(); err != nil {
			return err
		}
		c.frameHeader(framePing, flagAck, 0, 8)
		c.wbuf = append(c.wbuf, p...)
		c.kick()
		return nil
	case frameGoAway:
		if sid != 0 {
			return connError{codeProtocol, "GOAWAY on a stream"}
		}
		if len(p) < 8 {
			return connError{codeFrameSize, "GOAWAY length"}
		}
		// The client leaves: its streams finish, then the connection
		// closes.
		c.mu.Lock()
		if !c.goingAway {
			c.writeGoAway(codeNo)
		}
		c.mu.Unlock()
		return nil
	case frameWindowUpdate:
		return c.onWindowUpdate(sid, p)
	case frameContinuation:
		return c.onContinuation(flags, sid, p)
	}
	return nil // unknown frame types are ignored (§5.5)
}

// count counts a frame against a per-second limit.
func (c *h2conn) count(m *floodMeter, limit int) error {
	if m.hit(limit) {
		return connError{codeEnhanceYourCalm, "flood"}
	}
	return nil
}

func (c *h2conn) onSettings(flags byte, sid uint32, p []byte) error {
	if sid != 0 {
		return connError{codeProtocol, "SETTINGS on a stream"}
	}
	if flags&flagAck != 0 {
		if len(p) != 0 {
			return connError{codeFrameSize, "SETTINGS ack with payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return connError{codeFrameSize, "SETTINGS length"}
	}
	if err := c.count(&c.churn, h2MaxChurnPerSec); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ; len(p) > 0; p = p[6:] {
		id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
		switch id {
		case settingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(min(v, h2HeaderTableMax))
		case settingEnablePush:
			if v > 1 {
				return connError{codeProtocol, "ENABLE_PUSH value"}
			}
		case settingInitialWindowSize:
			if v > h2MaxWindow {
				return connError{codeFlowControl, "INITIAL_WINDOW_SIZE value"}
			}
			delta := int64(v) - c.peerInitWindow
			c.peerInitWindow = int64(v)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > h2MaxWindow {
					return connError{codeFlowControl, "stream window overflow"}
				}
			}
			c.cond.Broadcast()
		case settingMaxFrameSize:
			if v < 16384 || v > 1<<24-1 {
				return connError{codeProtocol, "MAX_FRAME_SIZE value"}
			}
			c.peerMaxFrame = int(v)
		}
	}
	if err := c.controlRoom(); err != nil {
		return err
	}
	c.frameHeader(frameSettings, flagAck, 0, 0)
	c.kick()
	return nil
}

func (c *h2conn) onWindowUpdate(sid uint32, p []byte) error {
	if len(p) != 4 {
		return connError{codeFrameSize, "WINDOW_UPDATE length"}
	}
	inc := int64(binary.BigEndian.Uint32(p) & 0x7fffffff)
	c.mu.Lock()
	defer c.mu.Unlock()
	if sid == 0 {
		if inc == 0 {
			return connError{codeProtocol, "WINDOW_UPDATE of 0"}
		}
		c.sendWindow += inc
		if c.sendWindow > h2MaxWindow {
			return connError{codeFlowControl, "connection window overflow"}
		}
		c.cond.Broadcast()
		return nil
	}
	st := c.streams[sid]
	if st == nil {
		if sid > c.maxID {
			return connError{codeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
		return nil // a closed stream
	}
	if inc == 0 {
		c.resetLocked(st, codeProtocol)
		return nil
	}
	st.sendWindow += inc
	if st.sendWindow > h2MaxWindow {
		c.resetLocked(st, codeFlowControl)
		return nil
	}
	c.cond.Broadcast()
	return nil
}

func (c *h2conn) onRSTStream(sid uint32, p []byte) error {
	if len(p) != 4 {
		return connError{codeFrameSize, "RST_STREAM length"}
	}
	if sid == 0 {
		return connError{codeProtocol, "RST_STREAM on stream 0"}
	}
	c.mu.Lock()
	if sid > c.maxID {
		c.mu.Unlock()
		return connError{codeProtocol, "RST_STREAM on an idle stream"}
	}
	st := c.streams[sid]
	if st == nil {
		c.mu.Unlock()
		return nil
	}
	running := !st.localDone
	st.clientReset()
	c.remove(st, false)
	c.mu.Unlock()
	if running {
		return c.count(&c.resets, h2MaxResetsPerSec)
	}
	return nil
}

func (c *h2conn) onData(flags byte, sid uint32, p []byte) error {
	if sid == 0 {
		return connError{codeProtocol, "DATA on stream 0"}
	}
	size := int64(len(p))
	data, err := unpad(flags, p)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > c.recvWindow {
		return connError{codeFlowControl, "connection window exceeded"}
	}
	c.recvWindow -= size
	st := c.streams[sid]
	if st == nil || st.remoteDone {
		// Not for a stream taking data: its bytes count against the
		// connection window, which is given back at once.
		c.giveBack(size)
		if sid > c.maxID {
			return connError{codeProtocol, "DATA on an idle stream"}
		}
		if st == nil && (c.wasReset(sid) || c.goingAway && sid > c.lastID) {
			// A stream the server reset, or one after its GOAWAY's
			// last stream id: ignored (RFC 9113 §5.4.2, §6.8).
			return nil
		}
		if st != nil {
			c.resetLocked(st, codeStreamClosed)
		} else {
			c.writeRST(sid, codeStreamClosed)
		}
		return nil
	}
	if size > st.recvWindow {
		c.giveBack(size)
		c.resetLocked(st, codeFlowControl)
		return nil
	}
	st.recvWindow -= size
	// Padding is flow-controlled but never read: given back now.
	if pad := size - int64(len(data)); pad > 0 {
		st.recvUnacked += pad
		c.giveBack(pad)
	}
	if len(data) == 0 && flags&flagEndStream == 0 {
		if err := c.count(&c.churn, h2MaxChurnPerSec); err != nil {
			return err
		}
	}
	st.bodyN += int64(len(data))
	if st.declared >= 0 && st.bodyN > st.declared {
		c.giveBack(int64(len(data)))
		c.resetLocked(st, codeProtocol)
		return nil
	}
	if !st.reset {
		st.queue(data)
	} else {
		c.giveBack(int64(len(data)))
	}
	if flags&flagEndStream != 0 {
		if st.declared >= 0 && st.bodyN != st.declared {
			c.resetLocked(st, codeProtocol)
			return nil
		}
		st.remoteEnd()
	}
	return nil
}

// giveBack returns consumed or discarded bytes to the connection window,
// in batches.
func (c *h2conn) giveBack(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= h2ConnWindow/4 && !c.dead {
		c.writeWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
		c.kick()
	}
}

// unpad strips a padded frame's padding.
func unpad(flags byte, p []byte) ([]byte, error) {
	if flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) == 0 {
		return nil, connError{codeFrameSize, "padded frame without pad length"}
	}
	pad := int(p[0])
	if pad >= len(p) {
		return nil, connError{codeProtocol, "padding longer than the payload"}
	}
	return p[1 : len(p)-pad], nil
}

// wasReset reports whether sid is a recently closed stream the server
// reset. Frames on it are ignored (RFC 9113 §5.4.2).
func (c *h2conn) wasReset(sid uint32) bool {
	for _, cs := range c.closed {
		if cs.id == sid {
			return cs.reset
		}
	}
	return false
}

// wasClosed reports whether sid is a recently closed stream.
func (c *h2conn) wasClosed(sid uint32) bool {
	for _, cs := range c.closed {
		if cs.id == sid {
			return true
		}
	}
	return false
}

// remove takes a closed stream out of the table. Called with mu held.
func (c *h2conn) remove(st *h2srvStream, byServer bool) {
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	c.closed[c.closedNext] = closedStream{id: st.id, reset: byServer}
	c.closedNext = (c.closedNext + 1) % h2ClosedMemory
	// Request bytes received but not read any more go back to the
	// connection window.
	if n := int64(len(st.body) - st.bodyOff); n > 0 {
		st.body, st.bodyOff = st.body[:0], 0
		c.giveBack(n)
	}
	c.setIdleDeadline()
}

// resetStream resets a stream by id (a stream error).
func (c *h2conn) resetStream(sid uint32, code h2Code) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[sid]; st != nil {
		c.resetLocked(st, code)
		return
	}
	c.writeRST(sid, code)
}

// resetLocked resets an open stream: RST_STREAM goes out, its pipeline
// sees the client gone.
func (c *h2conn) resetLocked(st *h2srvStream, code h2Code) {
	c.writeRST(st.id, code)
	st.localDone = true
	st.clientReset()
	c.remove(st, true)
}

// setIdleDeadline gives the reader the idle timeout while no stream is
// open, and no deadline otherwise. Called with mu held, or by the reader.
func (c *h2conn) setIdleDeadline() {
	idle := len(c.streams) == 0 && c.active == 0
	if c.countIdle(idle) {
		return
	}
	if idle == c.idleSet || c.dead {
		return
	}
	c.idleSet = idle
	if idle {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.p.opts.ClientIdleTimeout))
	} else {
		_ = c.conn.SetReadDeadline(time.Time{})
	}
}

// countIdle keeps the connection's place among its client's idle
// connections: a connection without streams is idle like an HTTP/1.x one
// waiting for its next request, and under the same caps. Over a cap it
// is told to go away and closes (true). Called with mu held.
func (c *h2conn) countIdle(idle bool) bool {
	lim := c.p.h1.limits
	if !idle {
		if c.idleCounted {
			lim.leave(c.peer, phaseIdle)
			c.idleCounted = false
		}
		return false
	}
	if c.idleCounted || c.dead || c.goingAway {
		return false
	}
	if !lim.enter(c.peer, phaseNone, phaseIdle) {
		c.p.metrics.capped.WithLabelValues("idle").Inc()
		c.writeGoAway(codeNo)
		c.wakeToClose()
		return true
	}
	c.idleCounted = true
	return false
}

// shut marks the connection dead after the reader stopped: every stream
// sees its client gone, the flusher writes what is queued and closes.
func (c *h2conn) shut() {
	c.mu.Lock()
	c.countIdle(false)
	c.dead = true
	if c.drainTimer != nil {
		c.drainTimer.Stop()
	}
	for _, st := range c.streams {
		st.clientReset()
		delete(c.streams, st.id)
	}
	c.cond.Broadcast()
	c.fcond.Signal()
	c.mu.Unlock()
}

// drainPingData is the payload of a graceful shutdown's PING.
const drainPingData = "ngdrain\x00"

// startGoAway begins a graceful shutdown in two steps (RFC 9113 §6.8): a
// GOAWAY naming every stream id with a PING, then, once the PING's ack
// shows that the client has seen the GOAWAY (or after drainAckTimeout),
// the final GOAWAY naming the last stream taken. A request the client
// sent while the first GOAWAY was on its way is thus served, not
// ignored, and the connection closes once its streams are done.
func (c *h2conn) startGoAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway || c.dead || c.drainPinged {
		return
	}
	c.drainPinged = true
	c.frameHeader(frameGoAway, 0, 0, 8)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, 0x7fffffff)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, uint32(codeNo))
	c.frameHeader(framePing, 0, 0, 8)
	c.wbuf = append(c.wbuf, drainPingData...)
	c.kick()
	c.drainTimer = time.AfterFunc(drainAckTimeout, c.finishGoAway)
}

// drainStarted reports whether startGoAway sent its PING: an ack with the
// same payload but no drain under way is a client's own, and ignored.
func (c *h2conn) drainStarted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drainPinged
}

// finishGoAway sends the final GOAWAY of a graceful shutdown.
func (c *h2conn) finishGoAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway || c.dead {
		return
	}
	c.writeGoAway(codeNo)
	if c.active == 0 && len(c.streams) == 0 {
		c.wakeToClose()
	}
}

// wakeToClose makes the reader return from its read so that a connection
// that has gone away with no stream left closes. Called with mu held.
func (c *h2conn) wakeToClose() {
	c.wokenToClose = true
	_ = c.conn.SetReadDeadline(aLongTimeAgo)
}

// endedGracefully reports whether the reader's error is only the wake-up
// of wakeToClose: the connection then lingers like any graceful end, so
// that a request the client sent meanwhile is read and dropped rather than
// left unread, which would make closing send a reset that destroys the
// responses and the GOAWAY before the client reads them.
func (c *h2conn) endedGracefully(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wokenToClose && c.goingAway && !c.dead
}

// closeAll closes every connection still open, at the end of a shutdown
// that ran out of time.
func (s *h2server) closeAll() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c.conn)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// shutdown sends GOAWAY on every connection, then waits for them to
// finish their streams and close, bounded by ctx.
func (s *h2server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*h2conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.startGoAway()
	}
	wait := time.Millisecond
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Writing. Every frame is appended to wbuf with mu held; kick wakes the
// flusher, which writes the buffer while the streams fill the next one.

func (c *h2conn) frameHeader(typ, flags byte, sid uint32, n int) {
	c.wbuf = append(c.wbuf, byte(n>>16), byte(n>>8), byte(n), typ, flags,
		byte(sid>>24)&0x7f, byte(sid>>16), byte(sid>>8), byte(sid))
}

func (c *h2conn) writeSettings() {
	c.frameHeader(frameSettings, 0, 0, 4*6)
	for _, s := range [...][2]uint32{
		{settingMaxConcurrentStreams, h2MaxStreams},
		{settingInitialWindowSize, h2StreamWindow},
		{settingMaxHeaderListSize, uint32(c.p.opts.MaxHeaderBytes)},
		{settingEnablePush, 0},
	} {
		c.wbuf = append(c.wbuf, byte(s[0]>>8), byte(s[0]), byte(s[1]>>24), byte(s[1]>>16), byte(s[1]>>8), byte(s[1]))
	}
}

func (c *h2conn) writeWindowUpdate(sid, inc uint32) {
	c.frameHeader(frameWindowUpdate, 0, sid, 4)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, inc)
}

func (c *h2conn) writeRST(sid uint32, code h2Code) {
	if c.dead {
		return
	}
	c.frameHeader(frameRSTStream, 0, sid, 4)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, uint32(code))
	c.kick()
}

// writeGoAway sends GOAWAY with the highest stream id taken; no stream
// after it is served.
func (c *h2conn) writeGoAway(code h2Code) {
	if c.dead {
		return
	}
	c.goingAway = true
	c.lastID = c.maxID
	c.frameHeader(frameGoAway, 0, 0, 8)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, c.lastID)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, uint32(code))
	c.kick()
}

// controlRoom refuses to queue more control frames for a client that
// does not read them.
func (c *h2conn) controlRoom() error {
	if len(c.wbuf) > h2WriteHardMax {
		return connError{codeEnhanceYourCalm, "client does not read"}
	}
	return nil
}

// kick wakes the flusher. Called with mu held.
func (c *h2conn) kick() {
	if c.flusherIdle {
		c.flusherIdle = false
		c.fcond.Signal()
	}
}

// flusher writes the queued frames until the connection is dead and
// nothing is left, then closes it.
func (c *h2conn) flusher() {
	defer close(c.done)
	c.mu.Lock()
	for {
		for len(c.wbuf) == 0 && !c.dead && c.werr == nil {
			c.flusherIdle = true
			c.fcond.Wait()
		}
		if len(c.wbuf) == 0 || c.werr != nil {
			break
		}
		if len(c.wbuf) < h2WriteSoftMax {
			// Streams that are ready to run add their frames first, so
			// that one write carries many responses.
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
		}
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.flushing = true
		c.mu.Unlock()
		_, err := c.conn.Write(buf)
		c.mu.Lock()
		c.flushing = false
		c.spare = buf[:0]
		if err != nil {
			c.werr = err
			c.dead = true
			for _, st := range c.streams {
				st.clientReset()
			}
		}
		// Writers waiting for room in the buffer may go on.
		c.cond.Broadcast()
	}
	c.dead = true
	c.cond.Broadcast()
	c.mu.Unlock()
	_ = c.conn.Close()
}
