package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// opTimeout bounds one measured operation (connect included): long enough
// for a SYN retransmitted twice (1 s, then 2 s later), which is the stall
// this mode exists to show.
const opTimeout = 5 * time.Second

// maxResponse is the most of an answer kept while looking for its end; the
// benchmark's backends answer with a few hundred bytes.
const maxResponse = 64 << 10

// httpRR runs HTTP/1.1 GETs over raw non-blocking sockets from one epoll
// loop, so that the client's own cost stays near wrk's, and times what a
// user waits for, which wrk does not: in "tcp-crr" mode (a new connection
// per request, "Connection: close") from connect() to the answer's last
// byte, so a lost SYN's retransmission timeout is in the latency; in
// "http-rr" mode (keep-alive connections, opened before the clock starts)
// per request.
//
// Without --rate it is a closed loop like wrk: -c operations always in
// flight. With --rate R it is an open loop: operations start on a fixed
// schedule of R per second whatever the answers do, at most -c at a time
// (later ones wait for a slot), and each is timed from when it was due,
// so a stall delays and counts against everything scheduled behind it.
// Operations still in flight when the time is up are not counted. It
// prints
//
//	connections|requests N errors E rate R p50 D p99 D
func httpRR(mode string, args []string) error {
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	rawAddr := fs.String("addr", "", "IP:PORT of an HTTP server")
	conns := fs.Int("c", 32, "concurrent connections (open loop: the most in flight)")
	dur := fs.Duration("d", 10*time.Second, "duration")
	rate := fs.Float64("rate", 0, "operations per second on a fixed schedule (0: closed loop)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(*rawAddr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", *rawAddr, err)
	}
	if !ap.Addr().Is4() || !slices.ContainsFunc(udpTargets, func(p netip.Prefix) bool { return p.Contains(ap.Addr()) }) {
		// The benchmark must never send load off this machine.
		return fmt.Errorf("--addr %s: not loopback nor the benchmark namespaces' address plan", ap)
	}
	if *conns < 1 || *conns > 4096 || *dur <= 0 || *dur > 5*time.Minute || *rate < 0 || *rate > 1e6 {
		return errors.New("-c must be 1..4096, -d at most 5m and --rate 0..1e6")
	}
	l, err := newLoop(ap, mode == "http-rr", *conns)
	if err != nil {
		return err
	}
	defer l.close()
	if err := l.run(*dur, *rate); err != nil {
		return err
	}
	what := "connections"
	if l.keepAlive {
		what = "requests"
	}
	report(what, l.lat, l.errs, *dur)
	return nil
}

// connection states.
const (
	stIdle       = iota // keep-alive, connected, no request out
	stConnecting        // connect() in progress
	stReading           // request sent, answer not complete
)

type conn struct {
	fd    int
	state int
	// start is when the measured operation began (or was due).
	start time.Time
	resp  []byte
}

type loop struct {
	addr      unix.SockaddrInet4
	keepAlive bool
	req       []byte
	epfd      int
	timerfd   int
	maxConns  int
	byFD      map[int]*conn
	idle      []*conn // keep-alive connections without a request
	inFlight  int
	// backlog holds the due times of operations waiting for a slot.
	backlog []time.Time
	lat     []time.Duration
	errs    map[string]int
	readBuf []byte
}

func newLoop(ap netip.AddrPort, keepAlive bool, maxConns int) (*loop, error) {
	l := &loop{
		addr:      unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()},
		keepAlive: keepAlive,
		maxConns:  maxConns,
		byFD:      map[int]*conn{},
		errs:      map[string]int{},
		readBuf:   make([]byte, 16<<10),
		epfd:      -1,
		timerfd:   -1,
	}
	closeHdr := "Connection: close\r\n"
	if keepAlive {
		closeHdr = ""
	}
	l.req = []byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: benchload\r\n" + closeHdr + "\r\n")
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if l.timerfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		l.close()
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.timerfd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.timerfd, &ev); err != nil {
		l.close()
		return nil, fmt.Errorf("epoll add timerfd: %w", err)
	}
	return l, nil
}

func (l *loop) close() {
	for fd := range l.byFD {
		_ = unix.Close(fd)
	}
	if l.timerfd >= 0 {
		_ = unix.Close(l.timerfd)
	}
	if l.epfd >= 0 {
		_ = unix.Close(l.epfd)
	}
}

func (l *loop) fail(kind string) { l.errs[kind]++ }

// dial starts a non-blocking connect; the connection is done when its fd
// becomes writable.
func (l *loop) dial(start time.Time) (*conn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Connect(fd, &l.addr); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("connect: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("epoll add: %w", err)
	}
	c := &conn{fd: fd, state: stConnecting, start: start}
	l.byFD[fd] = c
	return c, nil
}

func (l *loop) drop(c *conn) {
	delete(l.byFD, c.fd)
	_ = unix.Close(c.fd)
}

// send writes the request; the answer is awaited with EPOLLIN only.
func (l *loop) send(c *conn) bool {
	n, err := unix.Write(c.fd, l.req)
	if err != nil || n != len(l.req) {
		l.fail(fmt.Sprintf("write: %v", err))
		return false
	}
	c.state = stReading
	c.resp = c.resp[:0]
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
		l.fail(fmt.Sprintf("epoll mod: %v", err))
		return false
	}
	return true
}

// begin starts one operation timed from due.
func (l *loop) begin(due time.Time) {
	l.inFlight++
	if !l.keepAlive {
		if _, err := l.dial(due); err != nil {
			l.fail(err.Error())
			l.inFlight--
		}
		return
	}
	for len(l.idle) > 0 {
		c := l.idle[len(l.idle)-1]
		l.idle = l.idle[:len(l.idle)-1]
		c.start = due
		if l.send(c) {
			return
		}
		l.drop(c)
	}
	// Every keep-alive connection broke: open a replacement, timed too.
	if _, err := l.dial(due); err != nil {
		l.fail(err.Error())
		l.inFlight--
	}
}

// finish ends the operation on c (ok or not) and frees its slot; a
// keep-alive connection goes back to the idle ones unless it failed or
// the server is closing it (it says so in its last answer).
func (l *loop) finish(c *conn, ok, closing bool, now time.Time) {
	l.inFlight--
	if ok {
		l.lat = append(l.lat, now.Sub(c.start))
	}
	if ok && !closing && l.keepAlive {
		c.state = stIdle
		l.idle = append(l.idle, c)
		return
	}
	l.drop(c)
}

// answer is what answerEnd found out about a response so far.
type answer struct {
	// complete: resp holds the whole answer.
	complete bool
	// closing: the server closes the connection after it.
	closing bool
}

// answerEnd tells whether resp holds a whole 200 answer with a
// Content-Length body, or an error for any other answer.
func answerEnd(resp []byte) (answer, error) {
	end := bytes.Index(resp, []byte("\r\n\r\n"))
	if end < 0 {
		if len(resp) >= maxResponse {
			return answer{}, errors.New("answer header too long")
		}
		return answer{}, nil
	}
	if !bytes.HasPrefix(resp, status200) {
		line, _, _ := bytes.Cut(resp, []byte("\r\n"))
		return answer{}, fmt.Errorf("status %q", line)
	}
	n := -1
	var a answer
	for _, h := range bytes.Split(resp[:end], []byte("\r\n"))[1:] {
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		k, v = bytes.TrimSpace(k), bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("content-length")):
			var err error
			if n, err = strconv.Atoi(string(v)); err != nil || n < 0 {
				return answer{}, fmt.Errorf("content-length %q", v)
			}
		case bytes.EqualFold(k, []byte("connection")) && bytes.EqualFold(v, []byte("close")):
			a.closing = true
		}
	}
	if n < 0 {
		return answer{}, errors.New("no content-length")
	}
	if n > maxResponse {
		return answer{}, errors.New("answer body too long")
	}
	a.complete = len(resp) >= end+4+n
	return a, nil
}

// event handles readiness of connection c.
func (l *loop) event(c *conn, events uint32, now time.Time) {
	switch c.state {
	case stConnecting:
		if soErr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
			l.fail(fmt.Sprintf("connect: %v", unix.Errno(soErr)))
			l.finish(c, false, false, now)
			return
		}
		if events&unix.EPOLLOUT == 0 {
			return
		}
		if !l.send(c) {
			l.finish(c, false, false, now)
		}
	case stReading:
		for {
			n, err := unix.Read(c.fd, l.readBuf)
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			if err != nil {
				l.fail(fmt.Sprintf("read: %v", err))
				l.finish(c, false, false, now)
				return
			}
			if n == 0 {
				l.fail("closed before the whole answer")
				l.finish(c, false, false, now)
				return
			}
			c.resp = append(c.resp, l.readBuf[:n]...)
			a, perr := answerEnd(c.resp)
			if perr != nil {
				l.fail(perr.Error())
				l.finish(c, false, false, now)
				return
			}
			if a.complete {
				l.finish(c, true, a.closing, now)
				return
			}
		}
	case stIdle:
		// The server closed an idle keep-alive connection.
		l.idle = slices.DeleteFunc(l.idle, func(x *conn) bool { return x == c })
		l.drop(c)
	}
}

// warm opens the keep-alive connections before the clock starts.
func (l *loop) warm(n int) error {
	deadline := time.Now().Add(opTimeout)
	for range n {
		c, err := l.dial(time.Now())
		if err != nil {
			return err
		}
		_ = c
	}
	events := make([]unix.EpollEvent, 64)
	for pending := n; pending > 0; {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d connections not established after %s", pending, n, opTimeout)
		}
		k, err := unix.EpollWait(l.epfd, events, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("epoll wait: %w", err)
		}
		for _, ev := range events[:max(k, 0)] {
			c := l.byFD[int(ev.Fd)]
			if c == nil || c.state != stConnecting {
				continue
			}
			if soErr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
				return fmt.Errorf("connect: %v", unix.Errno(soErr))
			}
			c.state = stIdle
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.fd)}
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
				return fmt.Errorf("epoll mod: %w", err)
			}
			l.idle = append(l.idle, c)
			pending--
		}
	}
	return nil
}

// armTimer makes the timerfd fire at due (a time.Time of this process).
func (l *loop) armTimer(due time.Time, base time.Time, baseMono int64) error {
	abs := baseMono + int64(due.Sub(base))
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(abs, 1))}
	return unix.TimerfdSettime(l.timerfd, unix.TFD_TIMER_ABSTIME, &spec, nil)
}

func monotonicNow() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return ts.Nano(), nil
}

func (l *loop) run(dur time.Duration, rate float64) error {
	if l.keepAlive {
		if err := l.warm(l.maxConns); err != nil {
			return err
		}
	}
	baseMono, err := monotonicNow()
	if err != nil {
		return fmt.Errorf("clock: %w", err)
	}
	start := time.Now()
	end := start.Add(dur)
	var interval time.Duration
	next := start
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
		if err := l.armTimer(next, start, baseMono); err != nil {
			return fmt.Errorf("timer: %w", err)
		}
	} else {
		for range l.maxConns {
			l.begin(start)
		}
	}
	events := make([]unix.EpollEvent, 256)
	lastSweep := start
	for {
		now := time.Now()
		if !now.Before(end) {
			return nil
		}
		wait := int(min(end.Sub(now), 100*time.Millisecond)/time.Millisecond) + 1
		k, err := unix.EpollWait(l.epfd, events, wait)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("epoll wait: %w", err)
		}
		now = time.Now()
		for _, ev := range events[:max(k, 0)] {
			fd := int(ev.Fd)
			if fd == l.timerfd {
				var b [8]byte
				_, _ = unix.Read(l.timerfd, b[:])
				continue
			}
			if c := l.byFD[fd]; c != nil {
				l.event(c, ev.Events, now)
			}
		}
		if rate > 0 {
			// Everything due by now starts or queues for a slot.
			for !next.After(now) && next.Before(end) {
				l.backlog = append(l.backlog, next)
				next = next.Add(interval)
			}
			if err := l.armTimer(next, start, baseMono); err != nil {
				return fmt.Errorf("timer: %w", err)
			}
			for len(l.backlog) > 0 && l.inFlight < l.maxConns {
				due := l.backlog[0]
				l.backlog = l.backlog[1:]
				l.begin(due)
			}
		} else {
			for l.inFlight < l.maxConns && now.Before(end) {
				l.begin(now)
			}
		}
		if now.Sub(lastSweep) > 100*time.Millisecond {
			lastSweep = now
			l.sweep(now)
		}
	}
}

// sweep gives up operations older than opTimeout.
func (l *loop) sweep(now time.Time) {
	for _, c := range l.byFD {
		if c.state != stIdle && now.Sub(c.start) > opTimeout {
			l.fail("timeout")
			l.finish(c, false, false, now)
		}
	}
}
