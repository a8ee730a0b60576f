package handover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// requestTimeout bounds each exchange before the drain: the running agent
// answers a takeover once its controller has stopped (a sync in progress
// finishes first); one that does not answer in this time is wedged.
const requestTimeout = 2 * time.Minute

// Takeover is a successor's side of a handover: the predecessor has
// stopped syncing and handed over its listeners, and keeps serving with
// them until Serving.
type Takeover struct {
	conn *net.UnixConn
	// Listeners are the predecessor's listening sockets by name; the
	// caller owns the files.
	Listeners map[string]*os.File
	// PID is the predecessor's process id, for logs.
	PID int
}

// Take asks the agent serving path to hand its listeners over. The agent
// first stops writing to the datapath and releases its node-wide servers,
// so when Take returns the caller may open the datapath. ErrNoPeer (wrapped)
// means no agent runs.
func Take(ctx context.Context, path string) (*Takeover, error) {
	c, err := dial(path)
	if err != nil {
		return nil, err
	}
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("own network namespace: %w", err)
	}
	defer ns.Close()
	deadline := time.Now().Add(requestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	if err := send(c, message{Op: opTakeover, PID: os.Getpid()}, ns); err != nil {
		c.Close()
		return nil, err
	}
	m, files, err := receive(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("takeover from %s: %w", path, err)
	}
	switch m.Op {
	case opListeners:
	case opRefused:
		closeAll(files)
		c.Close()
		if m.Retry {
			return nil, fmt.Errorf("takeover from %s: %s: %w", path, m.Error, ErrBusy)
		}
		return nil, fmt.Errorf("takeover from %s refused: %s", path, m.Error)
	default:
		closeAll(files)
		c.Close()
		return nil, fmt.Errorf("takeover from %s: unexpected %q", path, m.Op)
	}
	ls, err := named(m, files)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("takeover from %s: %w", path, err)
	}
	_ = c.SetDeadline(time.Time{})
	return &Takeover{conn: c, Listeners: ls, PID: m.PID}, nil
}

// Serving tells the predecessor that this agent accepts connections on the
// listeners: it stops accepting, drains what it has and stops.
func (t *Takeover) Serving() error {
	defer t.conn.Close()
	_ = t.conn.SetDeadline(time.Now().Add(requestTimeout))
	return send(t.conn, message{Op: opServing, PID: os.Getpid()})
}

// Abort ends the takeover without serving: the predecessor learns that its
// successor failed.
func (t *Takeover) Abort() { _ = t.conn.Close() }

// Server answers takeover requests for a running agent.
type Server struct {
	ln       *net.UnixListener
	requests chan *Request
	log      *slog.Logger
	done     chan struct{}
	once     sync.Once
}

// Listen serves takeover requests on path, replacing a stale socket file.
func Listen(path string, log *slog.Logger) (*Server, error) {
	ln, err := listen(path)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, requests: make(chan *Request), log: log, done: make(chan struct{})}
	go s.accept()
	return s, nil
}

// Requests delivers valid takeover requests, one at a time: a request that
// arrives while the previous one is not taken is refused.
func (s *Server) Requests() <-chan *Request { return s.requests }

// Close stops answering; a takeover already delivered goes on.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		_ = s.ln.Close()
	})
}

func (s *Server) accept() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("handover: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go s.handle(c)
	}
}

func (s *Server) handle(c *net.UnixConn) {
	_ = c.SetDeadline(time.Now().Add(requestTimeout))
	m, files, err := receive(c)
	if err != nil {
		s.log.Warn("handover: bad request", "err", err)
		c.Close()
		return
	}
	refuse := func(reason string, retry bool) {
		closeAll(files)
		_ = send(c, message{Op: opRefused, Error: reason, Retry: retry})
		c.Close()
		s.log.Warn("handover: takeover refused", "pid", m.PID, "reason", reason)
	}
	if ok, err := peerIsRoot(c); err != nil || !ok {
		refuse("only root may take this agent's place", false)
		return
	}
	if m.Op != opTakeover || len(files) != 1 {
		refuse(fmt.Sprintf("want a %q request with the network namespace", opTakeover), false)
		return
	}
	same, err := sameNetns(files[0])
	closeAll(files)
	files = nil
	if err != nil || !same {
		refuse("the requesting agent runs in another network namespace (another node); give each node its own handover socket", false)
		return
	}
	r := &Request{conn: c, PID: m.PID}
	select {
	case s.requests <- r:
	case <-s.done:
		refuse("this agent is stopping", true)
	case <-time.After(time.Second):
		refuse("another takeover is in progress", true)
	}
}

// Request is a successor's takeover request.
type Request struct {
	conn *net.UnixConn
	// PID is the successor's process id, for logs.
	PID int
}

// Grant hands listeners to the successor. The caller keeps its own
// descriptors: the sockets are shared until it closes them.
func (r *Request) Grant(listeners map[string]*os.File) error {
	// Stopping took some of the request's time: the successor waits
	// requestTimeout from its request on.
	_ = r.conn.SetDeadline(time.Now().Add(requestTimeout))
	names, files := sortedNames(listeners)
	if len(files) > maxListeners {
		return fmt.Errorf("%d listeners: at most %d", len(files), maxListeners)
	}
	return send(r.conn, message{Op: opListeners, Names: names, PID: os.Getpid()}, files...)
}

// Refuse turns the request down.
func (r *Request) Refuse(reason string) {
	_ = send(r.conn, message{Op: opRefused, Error: reason})
	r.conn.Close()
}

// WaitServing waits until the successor serves (nil) or fails: it closed
// the connection, or ctx ended, without saying it serves.
func (r *Request) WaitServing(ctx context.Context) error {
	defer r.conn.Close()
	_ = r.conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = r.conn.SetDeadline(time.Now()) })
	defer stop()
	m, files, err := receive(r.conn)
	closeAll(files)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("successor (pid %d) went away before serving: %w", r.PID, err)
	}
	if m.Op != opServing {
		return fmt.Errorf("successor (pid %d): unexpected %q", r.PID, m.Op)
	}
	return nil
}
