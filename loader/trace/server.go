package trace

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodegress/nodegress/internal/privsock"
	"github.com/nodegress/nodegress/loader"
)

// Source is the datapath side of tracing; the loader's Datapath implements it.
type Source interface {
	// SetTracing switches event emission in the datapath on or off.
	SetTracing(on bool) error
	// ReadEvents calls fn for every event until ctx is done. fn may be
	// called from several goroutines.
	ReadEvents(ctx context.Context, fn func(loader.Event)) error
}

// KernelDropSource is a Source that can also report the kernel's drops of
// tracked flows; the loader's Datapath implements it.
type KernelDropSource interface {
	// SetKernelDrops attaches (on) or detaches the kernel drop tracing.
	SetKernelDrops(on bool) error
}

// LossSource is a Source that counts the events its ring buffer had no
// room for; the loader's Datapath implements it.
type LossSource interface {
	TraceLost() (uint64, error)
}

// Names resolves the IDs that events carry to the names the agent gave
// them. An unknown ID resolves to "".
type Names interface {
	ServiceName(id uint32) string
	BackendName(id uint32) string
}

// Defaults of the server's limits.
const (
	// defaultBuffer is how many events may wait for one client. At a few
	// hundred bytes each it bounds a client's memory to well under 1 MiB.
	defaultBuffer = 2048
	// defaultHandshakeTimeout bounds how long a connection may stay silent
	// before sending its filter.
	defaultHandshakeTimeout = 5 * time.Second
	// defaultWriteTimeout disconnects a client that accepts no data for
	// that long (a suspended process), so it cannot keep tracing switched
	// on in the datapath forever.
	defaultWriteTimeout = 30 * time.Second
	// defaultMaxClients bounds the agent's memory and the fan-out cost.
	defaultMaxClients = 32
	// maxHandshake bounds the filter line.
	maxHandshake = 64 << 10
	// idleCheck is how often an idle client looks for losses that no later
	// event has reported yet, and lossCheck how often the datapath's
	// count of events its ring buffer had no room for is read.
	idleCheck = time.Second
	lossCheck = time.Second
)

// Server streams datapath events to trace clients on a unix socket.
type Server struct {
	path    string
	src     Source
	names   Names
	log     *slog.Logger
	devices *deviceNames

	// Limits, fields so that tests can shrink them.
	bufferSize       int
	handshakeTimeout time.Duration
	writeTimeout     time.Duration
	maxClients       int
	lossCheck        time.Duration

	nextID atomic.Uint64
	// clients is read on every event without locking; add and remove
	// replace the slice under mu.
	clients atomic.Pointer[[]*client]
	// mu serialises client changes with the tracing switch, so that the
	// datapath's state always follows the client count.
	mu      sync.Mutex
	tracing bool
	// kernelDropClients counts clients that asked for kernel drops: the
	// tracepoint is attached while it is not zero.
	kernelDropClients int
	// req is the request tracing (requests.go); reqCache its connection
	// cache while a requests client listens, read on every event.
	req      requestState
	reqCache atomic.Pointer[connCache]
	// snaplen is the datapath's packet capture length: the largest any
	// client asked for, 0 (off) without pcap clients.
	snaplen int
}

// NewServer returns a server that listens on path, reads events from src
// and names services and backends with names (nil: IDs only).
func NewServer(path string, src Source, names Names, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		path:             path,
		src:              src,
		names:            names,
		log:              log,
		devices:          newDeviceNames(),
		bufferSize:       defaultBuffer,
		handshakeTimeout: defaultHandshakeTimeout,
		writeTimeout:     defaultWriteTimeout,
		maxClients:       defaultMaxClients,
		lossCheck:        lossCheck,
	}
}

// client is one connected trace session.
type client struct {
	id   uint64
	conn net.Conn
	m    *matcher
	ch   chan item
	// mu makes "queue is empty" and pending consistent for the writer: an
	// event is only queued or counted under it, and it is never held
	// during I/O.
	mu sync.Mutex
	// pending counts events dropped since the last one queued; the next
	// queued item carries it so the "lost" line lands where the gap is.
	pending uint64
	lost    atomic.Uint64 // total, for the log
	// datapathLost counts events the datapath lost (ring buffer full)
	// while the client was connected, not yet reported to it.
	datapathLost atomic.Uint64
	// snaplen is the bytes of each packet the client asked for (pcap);
	// 0 for none.
	snaplen int
}

// offer queues line without blocking, or counts it as lost.
func (c *client) offer(line []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case c.ch <- item{lostBefore: c.pending, line: line}:
		c.pending = 0
	default:
		c.pending++
		c.lost.Add(1)
	}
}

// tailLoss takes the losses no queued item will report: those after the
// last queued event, once the writer has caught up with the queue.
func (c *client) tailLoss() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ch) > 0 {
		return 0
	}
	n := c.pending
	c.pending = 0
	return n
}

type item struct {
	lostBefore uint64
	line       []byte
}

// Serve listens on the socket and streams events until ctx is done. It
// returns nil then, or an error when the socket cannot be set up or the
// event reader fails. The socket file is removed on return.
func (s *Server) Serve(ctx context.Context) error {
	// The datapath's maps are pinned and outlive the agent: an agent that
	// died with clients connected left tracing on, costing every packet a
	// ring buffer write with nobody reading. Reset before the first client
	// can connect and switch it on.
	if err := s.src.SetTracing(false); err != nil {
		s.log.Warn("switch tracing off at start", "err", err)
	}
	s.resetCapture()
	ln, err := privsock.Listen(s.path, "trace")
	if err != nil {
		return err
	}
	defer ln.Remove(s.log)
	s.log.Info("trace socket listening", "socket", s.path)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopClose := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopClose()

	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	wg.Go(func() {
		err := s.src.ReadEvents(ctx, s.dispatch)
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("reader stopped")
			}
			readErr <- fmt.Errorf("read datapath events: %w", err)
			cancel()
		}
	})
	if ls, ok := s.src.(LossSource); ok {
		wg.Go(func() { s.watchDatapathLoss(ctx, ls) })
	}

	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			// Out of file descriptors and the like: wait rather than spin.
			s.log.Warn("accept trace client", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		wg.Go(func() { s.handle(ctx, conn) })
	}
	cancel()
	wg.Wait()

	s.mu.Lock()
	if s.tracing {
		if err := s.src.SetTracing(false); err != nil {
			s.log.Warn("switch tracing off", "err", err)
		}
		s.tracing = false
	}
	if s.kernelDropClients > 0 {
		s.setKernelDrops(false)
		s.kernelDropClients = 0
	}
	if s.snaplen > 0 {
		s.resetCapture()
	}
	s.mu.Unlock()

	select {
	case err := <-readErr:
		return err
	default:
		return nil
	}
}

// watchDatapathLoss tells every connected client, within lossCheck, how
// many events the datapath could not write while it was connected: a gap
// no client could have seen otherwise (its own "lost" counts only what it
// read too slowly).
func (s *Server) watchDatapathLoss(ctx context.Context, ls LossSource) {
	last, err := ls.TraceLost()
	if err != nil {
		s.log.Warn("read the datapath's lost events", "err", err)
		return
	}
	t := time.NewTicker(s.lossCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := ls.TraceLost()
		if err != nil || n <= last {
			continue
		}
		if p := s.clients.Load(); p != nil {
			for _, c := range *p {
				c.datapathLost.Add(n - last)
			}
		}
		last = n
	}
}

// handle runs one client session: handshake, then the writer loop.
func (s *Server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	id := s.nextID.Add(1)

	f, err := s.handshake(conn)
	var m *matcher
	if err == nil {
		m, err = f.compile()
	}
	if err != nil {
		s.log.Info("trace client rejected", "client", id, "err", err)
		s.reject(conn, err)
		return
	}

	c := &client{id: id, conn: conn, m: m, ch: make(chan item, s.bufferSize), snaplen: f.Snaplen}
	if err := s.add(c); err != nil {
		s.log.Warn("trace client rejected", "client", id, "err", err)
		s.reject(conn, err)
		return
	}
	s.log.Info("trace client connected", "client", id, "filter", f)
	defer func() {
		s.remove(c)
		s.log.Info("trace client disconnected", "client", id, "lost", c.lost.Load())
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the connection is what unblocks a write to a stalled client.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// The client sends nothing after its filter, so any end of reading
	// (usually EOF) means it left; without this an idle session would only
	// notice at its next write.
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		_, _ = io.Copy(io.Discard, conn)
		cancel()
	}()
	defer func() {
		conn.Close()
		<-readDone
	}()

	w := bufio.NewWriterSize(conn, 32<<10)
	write := func(b []byte) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		_, err := w.Write(b)
		return err == nil
	}
	flush := func() bool {
		_ = conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		return w.Flush() == nil
	}
	if !write(encodeNotice(notice{Type: TypeReady})) || !flush() {
		return
	}

	idle := time.NewTimer(idleCheck)
	defer idle.Stop()
	for {
		if n := c.datapathLost.Swap(0); n > 0 && !write(encodeNotice(notice{Type: TypeLost, Lost: n, Where: LostInDatapath})) {
			return
		}
		var it item
		select {
		case it = <-c.ch:
		default:
			// Caught up: report losses no queued event carries, then
			// push out what is buffered before waiting.
			if n := c.tailLoss(); n > 0 {
				it.lostBefore = n
				break
			}
			if !flush() {
				return
			}
			idle.Reset(idleCheck)
			select {
			case it = <-c.ch:
			case <-idle.C:
				continue
			case <-ctx.Done():
				return
			}
		}
		if it.lostBefore > 0 && !write(encodeNotice(notice{Type: TypeLost, Lost: it.lostBefore})) {
			return
		}
		if it.line != nil && !write(it.line) {
			return
		}
	}
}

// handshake reads the client's filter line.
func (s *Server) handshake(conn net.Conn) (Filter, error) {
	_ = conn.SetReadDeadline(time.Now().Add(s.handshakeTimeout))
	defer conn.SetReadDeadline(time.Time{})
	r := bufio.NewReader(io.LimitReader(conn, maxHandshake))
	b, err := r.ReadBytes('\n')
	if err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return Filter{}, fmt.Errorf("no filter line received within %s", s.handshakeTimeout)
		case errors.Is(err, io.EOF) && len(b) >= maxHandshake:
			return Filter{}, fmt.Errorf("filter line longer than %d bytes", maxHandshake)
		case errors.Is(err, io.EOF):
			return Filter{}, errors.New("connection closed before the filter line")
		default:
			return Filter{}, fmt.Errorf("read filter: %w", err)
		}
	}
	var f Filter
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Filter{}, fmt.Errorf("decode filter: %w", err)
	}
	if dec.More() {
		return Filter{}, errors.New("decode filter: trailing data after the JSON object")
	}
	return f, nil
}

// reject tells the client why it is turned away; best effort, the
// connection is closed next either way.
func (s *Server) reject(conn net.Conn, err error) {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write(encodeNotice(notice{Type: TypeError, Error: err.Error()}))
}

// add registers c, switching tracing on for the first client.
func (s *Server) add(c *client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []*client
	if p := s.clients.Load(); p != nil {
		old = *p
	}
	if len(old) >= s.maxClients {
		return fmt.Errorf("too many trace clients (limit %d)", s.maxClients)
	}
	if err := s.checkRequests(c.m); err != nil {
		return err
	}
	if !s.tracing {
		if err := s.src.SetTracing(true); err != nil {
			return fmt.Errorf("switch tracing on: %w", err)
		}
		s.tracing = true
		s.log.Info("datapath tracing on")
	}
	if err := s.setCapture(append(slices.Clip(old), c)); err != nil {
		if len(old) == 0 && s.src.SetTracing(false) == nil {
			s.tracing = false
		}
		return err
	}
	if c.m.kernelDrops && s.kernelDropClients == 0 {
		var err error
		if kd, ok := s.src.(KernelDropSource); !ok {
			err = errors.New("kernel drops: not available from this agent")
		} else if err = kd.SetKernelDrops(true); err != nil {
			err = fmt.Errorf("kernel drops: %w", err)
		}
		if err != nil {
			_ = s.setCapture(old)
			// Nobody else wants the datapath's events either.
			if len(old) == 0 && s.src.SetTracing(false) == nil {
				s.tracing = false
			}
			return err
		}
		s.log.Info("kernel drop tracing", "on", true)
	}
	if c.m.kernelDrops {
		s.kernelDropClients++
	}
	s.startRequests(c.m)
	cs := append(slices.Clip(old), c)
	s.clients.Store(&cs)
	return nil
}

// remove unregisters c, switching tracing off after the last client.
func (s *Server) remove(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*client
	if p := s.clients.Load(); p != nil {
		for _, o := range *p {
			if o != c {
				cs = append(cs, o)
			}
		}
	}
	s.clients.Store(&cs)
	s.stopRequests(c.m)
	if err := s.setCapture(cs); err != nil {
		s.log.Warn("packet capture", "err", err)
	}
	if c.m.kernelDrops {
		s.kernelDropClients--
		if s.kernelDropClients == 0 {
			s.setKernelDrops(false)
		}
	}
	if len(cs) == 0 && s.tracing {
		if err := s.src.SetTracing(false); err != nil {
			// Left marked on: the next last client, or Serve's exit, retries.
			s.log.Warn("switch tracing off", "err", err)
			return
		}
		s.tracing = false
		s.log.Info("datapath tracing off")
	}
}

// setKernelDrops switches kernel drop tracing; mu is held.
func (s *Server) setKernelDrops(on bool) {
	kd, ok := s.src.(KernelDropSource)
	if !ok {
		return
	}
	if err := kd.SetKernelDrops(on); err != nil {
		s.log.Warn("switch kernel drop tracing", "on", on, "err", err)
		return
	}
	s.log.Info("kernel drop tracing", "on", on)
}

// dispatch fans one event out to every client whose filter matches. It
// never blocks: a client whose buffer is full loses the event, and learns
// how many it lost with its next one.
func (s *Server) dispatch(ev loader.Event) {
	p := s.clients.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	dev := s.devices.name(ev.Ifindex)
	if kd := ev.KernelDrop; kd != nil && kd.Netns != 0 {
		// A device of another network namespace (a pod's).
		dev = "netns:" + strconv.FormatUint(uint64(kd.Netns), 10)
	}
	svc := s.serviceName(ev.ServiceID)
	s.cacheEvent(&ev, dev, svc)
	// Encoded once each, without and with the packet's bytes (for pcap
	// clients), and shared read-only by every client.
	var lines [2][]byte
	for _, c := range *p {
		if !c.m.match(&ev, dev, svc) {
			continue
		}
		kind := 0
		if c.snaplen > 0 && ev.Packet != nil {
			kind = 1
		}
		if lines[kind] == nil {
			var err error
			if lines[kind], err = s.encode(&ev, dev, svc, kind == 1); err != nil {
				s.log.Warn("encode trace event", "err", err)
				return
			}
		}
		c.offer(lines[kind])
	}
}

func (s *Server) serviceName(id uint32) string {
	if id == 0 || s.names == nil {
		return ""
	}
	return s.names.ServiceName(id)
}

func (s *Server) backendName(id uint32) string {
	if id == 0 || s.names == nil {
		return ""
	}
	return s.names.BackendName(id)
}

func (s *Server) encode(ev *loader.Event, dev, svc string, withPacket bool) ([]byte, error) {
	r := s.record(ev, dev, svc)
	if withPacket {
		r.Packet = packetOf(ev.Packet)
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// record is an event's wire form, without the packet's bytes.
func (s *Server) record(ev *loader.Event, dev, svc string) Record {
	r := Record{
		Type:      TypeEvent,
		Time:      ev.Time,
		Device:    dev,
		Ifindex:   ev.Ifindex,
		Stage:     ev.Stage.String(),
		Verdict:   ev.Verdict.String(),
		Reason:    reasonName(ev.Reason),
		Service:   svc,
		ServiceID: ev.ServiceID,
		Backend:   s.backendName(ev.BackendID),
		BackendID: ev.BackendID,
		Orig:      tupleOf(ev.Orig),
		Len:       ev.Length,
	}
	if ev.Xlated != (loader.Tuple{}) {
		x := tupleOf(ev.Xlated)
		r.Xlated = &x
	}
	if kd := ev.KernelDrop; kd != nil {
		r.Reason = kd.ReasonName
		r.Location = kd.Symbol
	}
	return r
}
