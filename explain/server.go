package explain

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nodegress/nodegress/internal/privsock"
)

// requestTimeout bounds how long a connection may take to send its
// request and read the answer.
const requestTimeout = 5 * time.Second

// maxConns bounds the connections being answered or waiting for their
// turn; more are refused at once.
const maxConns = 8

var errBusy = errors.New("the agent is answering other explain requests; try again")

// Server answers explain requests on a unix socket.
type Server struct {
	path string
	ex   *Explainer
	log  *slog.Logger
	// conns holds a token per connection taken; answering one per answer
	// being computed.
	conns, answering chan struct{}
}

// NewServer returns a server on path answering with ex.
func NewServer(path string, ex *Explainer, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{path: path, ex: ex, log: log,
		conns: make(chan struct{}, maxConns), answering: make(chan struct{}, 1)}
}

// Serve answers until ctx is done, then returns nil; the socket file is
// removed on return.
func (s *Server) Serve(ctx context.Context) error {
	// Maps and routes are the node's: root only, as the trace socket.
	ln, err := privsock.Listen(s.path, "explain")
	if err != nil {
		return err
	}
	defer ln.Remove(s.log)
	s.log.Info("explain socket listening", "socket", s.path)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.log.Warn("explain socket accept", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		select {
		case s.conns <- struct{}{}:
		default:
			// As many connections as maxConns are being answered or
			// wait for their turn: refuse rather than pile up.
			wg.Go(func() { s.refuse(conn, errBusy) })
			continue
		}
		wg.Go(func() {
			defer func() { <-s.conns }()
			s.handle(conn)
		})
	}
}

func (s *Server) handle(conn net.Conn) {
	defer conn.Close()
	deadline := time.Now().Add(requestTimeout)
	_ = conn.SetDeadline(deadline)
	a := s.answer(conn, deadline)
	s.send(conn, a)
}

// refuse answers conn with err and closes it. The request is read first
// (bounded by a second), so that the client's write does not fail on a
// closed connection before it can read why.
func (s *Server) refuse(conn net.Conn, err error) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	_, _ = readLine(bufio.NewReaderSize(conn, 4096), maxRequest)
	s.send(conn, Answer{Version: Version, Error: err.Error()})
}

func (s *Server) send(conn net.Conn, a Answer) {
	b, err := json.Marshal(a)
	if err != nil {
		b, _ = json.Marshal(Answer{Version: Version, Error: "encode answer: " + err.Error()})
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		s.log.Debug("explain answer not sent", "err", err)
	}
}

func (s *Server) answer(conn net.Conn, deadline time.Time) Answer {
	r := bufio.NewReaderSize(conn, 4096)
	line, err := readLine(r, maxRequest)
	if err != nil {
		return Answer{Version: Version, Error: err.Error()}
	}
	q, err := decodeQuery(line)
	if err != nil {
		return Answer{Version: Version, Error: err.Error()}
	}
	// One answer at a time: each reads every service map under the
	// datapath's lock, which a sync waits for.
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case s.answering <- struct{}{}:
	case <-t.C:
		return Answer{Version: Version, Error: errBusy.Error()}
	}
	defer func() { <-s.answering }()
	return s.ex.Explain(q)
}

// readLine reads one line of at most limit bytes.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("request longer than %d bytes", limit)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, fmt.Errorf("read request: %w", err)
		}
	}
}
