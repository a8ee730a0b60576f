package explain

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// requestTimeout bounds how long a connection may take to send its
// request and read the answer.
const requestTimeout = 5 * time.Second

// Server answers explain requests on a unix socket.
type Server struct {
	path string
	ex   *Explainer
	log  *slog.Logger
}

// NewServer returns a server on path answering with ex.
func NewServer(path string, ex *Explainer, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{path: path, ex: ex, log: log}
}

// Serve answers until ctx is done, then returns nil; the socket file is
// removed on return.
func (s *Server) Serve(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return fmt.Errorf("create explain socket directory: %w", err)
	}
	if fi, err := os.Lstat(s.path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return fmt.Errorf("explain socket %s: exists and is not a socket", s.path)
		}
		if c, err := net.DialTimeout("unix", s.path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("explain socket %s: another agent is listening on it", s.path)
		}
		if err := os.Remove(s.path); err != nil {
			return fmt.Errorf("remove stale explain socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on explain socket: %w", err)
	}
	// Maps and routes are the node's: root only, as the trace socket.
	if err := os.Chmod(s.path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("restrict explain socket: %w", err)
	}
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
		wg.Go(func() { s.handle(conn) })
	}
}

func (s *Server) handle(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	a := s.answer(conn)
	b, err := json.Marshal(a)
	if err != nil {
		b, _ = json.Marshal(Answer{Version: Version, Error: "encode answer: " + err.Error()})
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		s.log.Debug("explain answer not sent", "err", err)
	}
}

func (s *Server) answer(conn net.Conn) Answer {
	r := bufio.NewReaderSize(conn, 4096)
	line, err := readLine(r, maxRequest)
	if err != nil {
		return Answer{Version: Version, Error: err.Error()}
	}
	q, err := decodeQuery(line)
	if err != nil {
		return Answer{Version: Version, Error: err.Error()}
	}
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
