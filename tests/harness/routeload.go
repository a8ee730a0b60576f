package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nodegress/nodegress/tests/netns"
)

// PhaseCounts are the outcomes of the requests a RouteLoad sent during one
// phase (a request counts in the phase it was sent in).
type PhaseCounts struct {
	Name       string
	Start, End time.Time
	// OK counts 2xx answers, Pods them by answering pod.
	OK   int
	Pods map[string]int
	// Status counts answers outside 2xx by code; Errors counts requests
	// that got no answer (refused, reset, timed out, a kept-alive
	// connection closed under the request).
	Status map[int]int
	Errors int
	// Refused counts the Errors that were refused connections.
	Refused int
	// Examples are the first few failures, for the test log.
	Examples []string
}

// Failed is the number of requests that did not get a 2xx answer.
func (p PhaseCounts) Failed() int {
	n := p.Errors
	for _, c := range p.Status {
		n += c
	}
	return n
}

// Total is the number of requests counted.
func (p PhaseCounts) Total() int { return p.OK + p.Failed() }

func (p PhaseCounts) String() string {
	s := fmt.Sprintf("%s: %d requests in %s, %d 2xx, %d failed", p.Name, p.Total(),
		p.End.Sub(p.Start).Round(time.Millisecond), p.OK, p.Failed())
	if p.Failed() > 0 {
		codes := slices.Sorted(maps.Keys(p.Status))
		var parts []string
		for _, c := range codes {
			parts = append(parts, fmt.Sprintf("%d×%d", p.Status[c], c))
		}
		if p.Errors > 0 {
			parts = append(parts, fmt.Sprintf("%d errors (%d refused)", p.Errors, p.Refused))
		}
		s += " (" + strings.Join(parts, ", ") + "; first: " + strings.Join(p.Examples, "; ") + ")"
	}
	return s
}

// RouteLoad sends GET / through an L7 proxy for a set of hostnames, one
// host after the other, without pause, from workers that keep their
// connection alive and workers that open one per request, and counts
// every outcome. Failures are never retried: a kept-alive connection the
// proxy closes under a request is a failed request, as a client without
// retries would see it.
type RouteLoad struct {
	addr    netip.AddrPort
	ns      *netns.NS
	hosts   []string
	timeout time.Duration

	mu     sync.Mutex
	phases []*PhaseCounts
	// lastPod is the pod of each host's latest 2xx answer; oks counts
	// 2xx answers and podAt is the value of oks at each pod's latest.
	lastPod map[string]string
	oks     int64
	podAt   map[string]int64

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// RouteLoadConfig shapes a RouteLoad.
type RouteLoadConfig struct {
	// KeepAlive workers keep their connection; NewConn workers open one
	// per request.
	KeepAlive, NewConn int
	// Timeout bounds each connect and each request; default
	// RequestTimeout. A test that makes the proxy wait on purpose (a
	// restart while connections queue) sets it above that wait.
	Timeout time.Duration
	// Phase names the first phase.
	Phase string
}

// StartRouteLoad starts cfg's workers sending to addr from ns, the Host
// header cycling through hosts.
func StartRouteLoad(ctx context.Context, ns *netns.NS, addr netip.AddrPort, hosts []string, cfg RouteLoadConfig) *RouteLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &RouteLoad{addr: addr, ns: ns, hosts: slices.Clone(hosts), timeout: cfg.Timeout, stop: cancel,
		lastPod: map[string]string{}, podAt: map[string]int64{}}
	if l.timeout <= 0 {
		l.timeout = RequestTimeout
	}
	l.Phase(cfg.Phase)
	for i := range cfg.KeepAlive + cfg.NewConn {
		l.wg.Go(func() { l.worker(ctx, i, i < cfg.KeepAlive) })
	}
	return l
}

// Phase ends the current phase and starts one called name.
func (l *RouteLoad) Phase(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if n := len(l.phases); n > 0 {
		l.phases[n-1].End = now
	}
	l.phases = append(l.phases, &PhaseCounts{Name: name, Start: now, Pods: map[string]int{}, Status: map[int]int{}})
}

// Current returns a copy of the current phase's counts.
func (l *RouteLoad) Current() PhaseCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := *l.phases[len(l.phases)-1]
	p.End = time.Now()
	p.Pods, p.Status = maps.Clone(p.Pods), maps.Clone(p.Status)
	return p
}

// LastPod returns the pod of host's latest 2xx answer.
func (l *RouteLoad) LastPod(host string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastPod[host]
}

// AnswersWithout returns how many 2xx answers came since pod's latest
// (all of them when it never answered).
func (l *RouteLoad) AnswersWithout(pod string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.oks - l.podAt[pod]
}

// Stop ends the load and returns every phase's counts.
func (l *RouteLoad) Stop() []PhaseCounts {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []PhaseCounts
	for i, p := range l.phases {
		if i == len(l.phases)-1 {
			p.End = time.Now()
		}
		out = append(out, *p)
	}
	return out
}

func (l *RouteLoad) current() *PhaseCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.phases[len(l.phases)-1]
}

func (l *RouteLoad) record(p *PhaseCounts, host string, code int, pod string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		p.Errors++
		if errors.Is(err, syscall.ECONNREFUSED) {
			p.Refused++
		}
	case code >= 200 && code < 300:
		p.OK++
		p.Pods[pod]++
		l.oks++
		l.podAt[pod] = l.oks
		l.lastPod[host] = pod
		return
	default:
		p.Status[code]++
	}
	if len(p.Examples) < 3 {
		what := fmt.Sprintf("HTTP %d", code)
		if err != nil {
			what = err.Error()
		}
		p.Examples = append(p.Examples, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), host, what))
	}
}

func (l *RouteLoad) worker(ctx context.Context, id int, keepAlive bool) {
	var (
		conn net.Conn
		br   *bufio.Reader
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	// Workers start at different hosts so that they do not move in step.
	next := id * 7919
	for ctx.Err() == nil {
		host := l.hosts[next%len(l.hosts)]
		next++
		p := l.current()
		if conn == nil {
			dctx, cancel := context.WithTimeout(ctx, l.timeout)
			c, err := l.ns.DialContext(dctx, "tcp", l.addr.String())
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					l.record(p, host, 0, "", fmt.Errorf("connect: %w", err))
				}
				continue
			}
			conn, br = c, bufio.NewReader(c)
		}
		code, pod, closed, err := get(conn, br, host, !keepAlive, l.timeout)
		if ctx.Err() != nil {
			// Cut short by the stop: not an outcome of the proxy.
			return
		}
		l.record(p, host, code, pod, err)
		if err != nil || closed || !keepAlive {
			conn.Close()
			conn = nil
		}
	}
}

// get sends GET / for host on conn and reads the answer: its status, the
// answering pod and whether the server closes the connection.
func get(conn net.Conn, br *bufio.Reader, host string, closeAfter bool, timeout time.Duration) (int, string, bool, error) {
	_ = conn.SetDeadline(time.Now().Add(timeout))
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\n"
	if closeAfter {
		req += "Connection: close\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		return 0, "", true, fmt.Errorf("send request: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", true, fmt.Errorf("read response: %w", err)
	}
	r, err := newL7Response(resp)
	if err != nil {
		return 0, "", true, err
	}
	return r.StatusCode, r.Pod(), resp.Close, nil
}
