package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
)

// fakeRequests stands in for the proxy: publish hands a request to the
// server's subscription, as the proxy does when a request finishes.
type fakeRequests struct {
	mu    sync.Mutex
	fn    func(*Request)
	subs  int // subscriptions made
	stops int // subscriptions ended
	// watches and watchStops count the upstream watches started and
	// ended.
	watches, watchStops int
}

func (f *fakeRequests) WatchUpstreams() func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.watchStops++
	}
}

func (f *fakeRequests) watchCounts() (watches, stops int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches, f.watchStops
}

func (f *fakeRequests) TraceRequests(fn func(*Request)) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fn = fn
	f.subs++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.fn = nil
		f.stops++
	}
}

func (f *fakeRequests) counts() (subs, stops int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs, f.stops
}

// publish reports r; false when nobody is subscribed.
func (f *fakeRequests) publish(r Request) bool {
	f.mu.Lock()
	fn := f.fn
	f.mu.Unlock()
	if fn == nil {
		return false
	}
	fn(&r)
	return true
}

// The tuples of one request: the client's connection to the frontend
// and the proxy's to a pod on another node.
var (
	clientTuple   = loader.Tuple{Src: ap("192.0.2.10:40000"), Dst: ap("192.0.2.1:80"), Proto: loader.TCP}
	upstreamTuple = loader.Tuple{Src: ap("192.0.2.1:51000"), Dst: ap("10.1.0.7:8080"), Proto: loader.TCP}
)

// steerEvent is the XDP program passing a packet of the client's
// connection to the stack, for sk_lookup to steer it to the proxy.
func steerEvent(orig loader.Tuple) loader.Event {
	return loader.Event{Time: testTime, Ifindex: 2, Stage: loader.StageXDP, Verdict: loader.VerdictPass,
		Reason: loader.ReasonPassL7, ServiceID: 1, Orig: orig, Length: 74}
}

// upstreamDrop is the kernel dropping a packet of the proxy's upstream
// connection.
func upstreamDrop() loader.Event {
	ev := kernelDropEvent()
	ev.Orig, ev.Xlated = upstreamTuple, upstreamTuple
	return ev
}

// proxyRequest is a request as the agent's proxy reports it.
func proxyRequest(id string, status int) Request {
	return Request{
		ID: id, Time: testTime, Node: "node-a", Method: "GET", Host: "app.example", Path: "/api/items",
		Proto: "HTTP/1.1", Status: status, Bytes: 20,
		Client: RequestClient{Tuple: RequestTuple(clientTuple.Src, clientTuple.Dst)},
		Route:  RequestRoute{Kind: "ingress", Name: "default/app", Host: "app.example", Path: "/api", Rule: -1},
		Upstream: RequestUpstream{Service: "default/web:http", Tuple: RequestTuple(upstreamTuple.Src, upstreamTuple.Dst),
			Pod: "default/web-5d8f", Node: "node-b"},
		DurationMS: 1.5, UpstreamMS: 1.2,
	}
}

// nextRequest reads one line and decodes it as a request record.
func (c *rawClient) nextRequest() Request {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	b, err := c.r.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("read trace line: %v", err)
	}
	var r Request
	if err := json.Unmarshal(b, &r); err != nil || r.Type != TypeRequest {
		c.t.Fatalf("line %s: want a request record (%v)", b, err)
	}
	return r
}

func TestRequestsJoined(t *testing.T) {
	src := newFakeSource()
	reqs := &fakeRequests{}
	s, path := startServer(t, src, func(s *Server) { s.SetRequestSource(reqs) })

	// Events before any requests client are not remembered.
	plain := subscribe(t, path, Filter{})
	src.emit(t, steerEvent(clientTuple))
	plain.next()
	if reqs.publish(proxyRequest("early", 200)) {
		t.Fatal("subscribed to the proxy without a requests client")
	}

	c := subscribe(t, path, Filter{RequestFilter: RequestFilter{Requests: true}, KernelDrops: true})
	errs := subscribe(t, path, Filter{RequestFilter: RequestFilter{Requests: true, Status: "5xx"}, KernelDrops: true})
	if subs, _ := reqs.counts(); subs != 1 {
		t.Fatalf("%d subscriptions to the proxy for two requests clients, want 1", subs)
	}
	if on, _ := src.kernelState(); !on {
		t.Fatal("kernel drops not attached for a requests client that asked")
	}
	syn := steerEvent(clientTuple)
	reply := steerEvent(loader.Tuple{Src: clientTuple.Dst, Dst: clientTuple.Src, Proto: loader.TCP})
	for _, ev := range []loader.Event{syn, reply, fwdEvent(), upstreamDrop()} {
		src.emit(t, ev)
	}
	for range 3 {
		plain.next() // plain clients still get every event they asked for
	}
	if !reqs.publish(proxyRequest("req-1", 200)) || !reqs.publish(proxyRequest("req-2", 503)) {
		t.Fatal("no subscription to the proxy")
	}

	// The first line is the request: no raw event reached this client.
	r := c.nextRequest()
	if r.ID != "req-1" || r.Node != "node-a" || r.Upstream.Pod != "default/web-5d8f" || r.Upstream.Node != "node-b" {
		t.Errorf("record %+v", r)
	}
	if len(r.Client.Steering) != 2 {
		t.Fatalf("steering %+v, want both directions of the client connection", r.Client.Steering)
	}
	if st := r.Client.Steering[0]; st.Stage != "xdp" || st.Reason != "pass_l7" || st.Device != "eth0" || st.Orig.Src != clientTuple.Src {
		t.Errorf("steering %+v", st)
	}
	if len(r.Client.Drops) != 0 || r.Client.Drops == nil {
		t.Errorf("client drops %+v, want an empty list", r.Client.Drops)
	}
	if len(r.Upstream.Drops) != 1 || r.Upstream.Drops[0].Reason != "NO_SOCKET" || r.Upstream.Drops[0].Stage != "kernel" {
		t.Errorf("upstream drops %+v, want the kernel's NO_SOCKET", r.Upstream.Drops)
	}
	if r2 := c.nextRequest(); r2.ID != "req-2" {
		t.Errorf("second record %q", r2.ID)
	}
	if r := errs.nextRequest(); r.ID != "req-2" || r.Status != 503 {
		t.Errorf("5xx client got %s (%d), want only req-2", r.ID, r.Status)
	}

	c.conn.Close()
	errs.conn.Close()
	eventually(t, "requests clients to leave", func() bool { return s.clientCount() == 1 })
	if _, stops := reqs.counts(); stops != 1 {
		t.Errorf("%d unsubscriptions after the last requests client, want 1", stops)
	}
	if s.reqCache.Load() != nil {
		t.Error("connection cache kept with no requests client")
	}
}

// TestRequestsFailedJoinedLate checks that the record of a failed request
// is joined with a drop of its upstream connection that arrives just after
// the request finished, as a pod kernel's drop of the proxy's SYN races
// the proxy's 502; a request that did not fail is joined at once.
func TestRequestsFailedJoinedLate(t *testing.T) {
	src := newFakeSource()
	reqs := &fakeRequests{}
	_, path := startServer(t, src, func(s *Server) { s.SetRequestSource(reqs) })
	c := subscribe(t, path, Filter{RequestFilter: RequestFilter{Requests: true}, KernelDrops: true})

	served := proxyRequest("served", 200)
	failed := proxyRequest("failed", 502)
	failed.Error = "connect: connection refused"
	reqs.publish(served)
	r := c.nextRequest()
	if r.ID != "served" || len(r.Upstream.Drops) != 0 {
		t.Errorf("first record %s with upstream drops %+v: want the served one, without drops", r.ID, r.Upstream.Drops)
	}
	reqs.publish(failed)
	src.emit(t, upstreamDrop())
	r = c.nextRequest()
	if r.ID != "failed" || len(r.Upstream.Drops) != 1 || r.Upstream.Drops[0].Reason != "NO_SOCKET" {
		t.Errorf("second record %s with upstream drops %+v: want the failed one with the later NO_SOCKET", r.ID, r.Upstream.Drops)
	}
}

// TestRequestsJoinedAfterReaderCatchesUp: the events of a request's
// connection were written before the proxy finished it, but a loaded
// reader may not have read them yet; the record is joined once the
// reader caught up (EventSyncer), so it carries them.
func TestRequestsJoinedAfterReaderCatchesUp(t *testing.T) {
	src := newFakeSource()
	reqs := &fakeRequests{}
	_, path := startServer(t, src, func(s *Server) { s.SetRequestSource(reqs) })
	c := subscribe(t, path, Filter{RequestFilter: RequestFilter{Requests: true}})

	src.lag(steerEvent(clientTuple))
	syncs := src.syncCount()
	reqs.publish(proxyRequest("late-events", 200))
	r := c.nextRequest()
	if r.ID != "late-events" || len(r.Client.Steering) != 1 || r.Client.Steering[0].Reason != "pass_l7" {
		t.Errorf("record %s with steering %+v: want the pass_l7 the reader had not read when the request finished", r.ID, r.Client.Steering)
	}
	if src.syncCount() == syncs {
		t.Error("the record was joined without waiting for the reader")
	}

	// A request on a connection whose events were never written has no
	// steering: the join takes only its own connection's.
	other := proxyRequest("other-conn", 200)
	other.Client.Tuple = RequestTuple(ap("192.0.2.99:40000"), clientTuple.Dst)
	reqs.publish(other)
	if r := c.nextRequest(); r.ID != "other-conn" || len(r.Client.Steering) != 0 {
		t.Errorf("record %s with steering %+v: want none", r.ID, r.Client.Steering)
	}
}

// TestRequestsUpstreamWatch checks that the proxy's upstream connections
// are watched for kernel drops exactly while a requests client with
// kernel drops listens: not for a requests client without them, nor for
// an events client with them.
func TestRequestsUpstreamWatch(t *testing.T) {
	src := newFakeSource()
	reqs := &fakeRequests{}
	s, path := startServer(t, src, func(s *Server) { s.SetRequestSource(reqs) })
	expect := func(what string, watches, stops int) {
		t.Helper()
		if w, st := reqs.watchCounts(); w != watches || st != stops {
			t.Errorf("%s: %d watches started, %d ended; want %d, %d", what, w, st, watches, stops)
		}
	}
	noDrops := subscribe(t, path, Filter{RequestFilter: RequestFilter{Requests: true}})
	events := subscribe(t, path, Filter{KernelDrops: true})
	expect("requests without kernel drops, events with", 0, 0)
	a := subscribe(t, path, Filter{RequestFilter: RequestFilter{Requests: true}, KernelDrops: true})
	expect("a requests client with kernel drops", 1, 0)
	b := subscribe(t, path, Filter{RequestFilter: RequestFilter{Requests: true, Status: "5xx"}, KernelDrops: true})
	expect("a second one", 1, 0)
	a.conn.Close()
	eventually(t, "the first to leave", func() bool { return s.clientCount() == 3 })
	expect("one left", 1, 0)
	b.conn.Close()
	eventually(t, "the second to leave", func() bool { return s.clientCount() == 2 })
	expect("both left", 1, 1)
	noDrops.conn.Close()
	events.conn.Close()
	eventually(t, "every client to leave", func() bool { return s.clientCount() == 0 })
	expect("all left", 1, 1)
}

func TestRequestsUnavailable(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, nil)
	err := Run(context.Background(), path, Filter{RequestFilter: RequestFilter{Requests: true}}, &bytes.Buffer{}, FormatJSON)
	if err == nil || !strings.Contains(err.Error(), errNoRequests.Error()) {
		t.Fatalf("Run: %v, want %q", err, errNoRequests)
	}
	if on, _ := src.state(); on || s.clientCount() != 0 {
		t.Error("refused requests client switched tracing on or stayed registered")
	}
	subscribe(t, path, Filter{})
}

func TestRequestFiltering(t *testing.T) {
	joined := proxyRequest("req-1", 502)
	joined.Host = "App.Example:8080"
	joined.Client.Steering = []Record{{Device: "eth0", Stage: "xdp", Verdict: "PASS", Reason: "pass_l7"}}
	joined.Client.Drops, joined.Upstream.Drops = []Record{}, []Record{{Stage: "kernel", Verdict: "DROP", Reason: "NO_SOCKET"}}
	on := RequestFilter{Requests: true}
	with := func(f Filter) Filter { f.Requests = true; return f }
	tests := []struct {
		name   string
		filter Filter
		want   bool
	}{
		{"everything", Filter{RequestFilter: on}, true},
		{"host without port, any case", Filter{RequestFilter: RequestFilter{Requests: true, Host: "app.example"}}, true},
		{"other host", Filter{RequestFilter: RequestFilter{Requests: true, Host: "api.example"}}, false},
		{"path prefix", Filter{RequestFilter: RequestFilter{Requests: true, Path: "/api/"}}, true},
		{"other path", Filter{RequestFilter: RequestFilter{Requests: true, Path: "/admin"}}, false},
		{"status class", Filter{RequestFilter: RequestFilter{Requests: true, Status: "404,5xx"}}, true},
		{"status code", Filter{RequestFilter: RequestFilter{Requests: true, Status: "502"}}, true},
		{"other status", Filter{RequestFilter: RequestFilter{Requests: true, Status: "2xx,404"}}, false},
		{"request id", Filter{RequestFilter: RequestFilter{Requests: true, RequestID: "req-1"}}, true},
		{"other request id", Filter{RequestFilter: RequestFilter{Requests: true, RequestID: "req-2"}}, false},
		{"client address", with(Filter{Addr: "192.0.2.10"}), true},
		{"pod address", with(Filter{Addr: "10.1.0.0/16"}), true},
		{"other address", with(Filter{Addr: "198.51.100.0/24"}), false},
		{"frontend port", with(Filter{Port: 80}), true},
		{"other port", with(Filter{Port: 443}), false},
		{"service", with(Filter{Service: "default/web"}), true},
		{"other service", with(Filter{Service: "kube-system"}), false},
		{"tcp", with(Filter{Proto: "tcp"}), true},
		{"udp", with(Filter{Proto: "udp"}), false},
		{"steering device", with(Filter{Device: "eth0"}), true},
		{"other device", with(Filter{Device: "eth1"}), false},
		{"a dropped packet", with(Filter{Verdict: "drop"}), true},
		{"a redirected packet", with(Filter{Verdict: "redirect"}), false},
		{"steering reason", with(Filter{Reason: "pass_l7"}), true},
		{"other reason", with(Filter{Reason: "drop_no_backend"}), false},
		{"kernel reason", with(Filter{KernelDrops: true, Reason: "no_socket"}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.filter.compile()
			if err != nil {
				t.Fatal(err)
			}
			if got := m.matchRequest(&joined); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
			if m.match(&loader.Event{Orig: clientTuple}, "eth0", "") {
				t.Error("a requests client matched a datapath event")
			}
		})
	}
}

func TestRequestFilterErrors(t *testing.T) {
	tests := []struct {
		name   string
		filter RequestFilter
		want   string // "" valid
	}{
		{"host alone", RequestFilter{Host: "a.example"}, "need --requests"},
		{"status alone", RequestFilter{Status: "5xx"}, "need --requests"},
		{"bad status", RequestFilter{Requests: true, Status: "5x"}, `status "5x"`},
		{"status out of range", RequestFilter{Requests: true, Status: "99"}, `status "99"`},
		{"class 6xx", RequestFilter{Requests: true, Status: "6xx"}, `status "6xx"`},
		{"valid", RequestFilter{Requests: true, Host: "a.example", Path: "/", Status: "200, 4XX", RequestID: "x"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Filter{RequestFilter: tt.filter}.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestConnCacheBounds(t *testing.T) {
	now := testTime
	c := newConnCache(2, time.Minute, func() time.Time { return now })
	conn := func(port uint16) loader.Tuple {
		return loader.Tuple{Src: netipAddrPort("192.0.2.10", port), Dst: ap("192.0.2.1:80"), Proto: loader.TCP}
	}
	add := func(ev loader.Event) { c.add(&ev, func() Record { return Record{Reason: reasonName(ev.Reason)} }) }
	steering := func(tup loader.Tuple) int {
		st, _ := c.lookup(keyOf(tup.Proto, tup.Src, tup.Dst))
		return len(st)
	}

	// Per connection: the first maxSteering decisions, the rest counted.
	for range maxSteering + 3 {
		add(steerEvent(conn(1)))
	}
	if got := steering(conn(1)); got != maxSteering {
		t.Errorf("%d steering events kept, want %d", got, maxSteering)
	}
	if st := c.stats(); st.eventsDropped != 3 {
		t.Errorf("%d events counted as dropped, want 3", st.eventsDropped)
	}
	// Drops have their own room.
	drop := steerEvent(conn(1))
	drop.Verdict, drop.Reason = loader.VerdictDrop, loader.ReasonDropNoBackend
	add(drop)
	if _, drops := c.lookup(keyOf(loader.TCP, conn(1).Src, conn(1).Dst)); len(drops) != 1 || drops[0].Reason != "drop_no_backend" {
		t.Errorf("drops %+v", drops)
	}

	// A third connection evicts the least recently seen one.
	add(steerEvent(conn(2)))
	add(steerEvent(conn(1))) // seen again: conn 2 is now the oldest
	add(steerEvent(conn(3)))
	if steering(conn(2)) != 0 || steering(conn(1)) == 0 || steering(conn(3)) != 1 {
		t.Errorf("after eviction: conn1 %d conn2 %d conn3 %d events", steering(conn(1)), steering(conn(2)), steering(conn(3)))
	}
	if st := c.stats(); st.evicted != 1 || c.len() != 2 {
		t.Errorf("evicted %d, %d connections, want 1 and 2", st.evicted, c.len())
	}

	// Idle past the TTL: forgotten, without counting as an eviction.
	now = now.Add(time.Minute + time.Second)
	if steering(conn(1)) != 0 || c.len() != 0 {
		t.Errorf("%d connections remembered past their TTL", c.len())
	}
	if st := c.stats(); st.evicted != 1 {
		t.Errorf("expiry counted as eviction: %d", st.evicted)
	}
}

func TestRequestText(t *testing.T) {
	r := proxyRequest("req-1", 200)
	r.Client.TLS, r.Client.SNI, r.Client.ALPN = true, "app.example", "h2"
	r.Client.Steering = []Record{{Device: "eth0", Stage: "xdp", Verdict: "PASS", Reason: "pass_l7"},
		{Device: "eth0", Stage: "sk-lookup", Verdict: "REDIRECT", Reason: "sk_steer"}}
	r.Upstream.Drops = []Record{{Time: testTime, Device: "eth0", Stage: "kernel", Verdict: "DROP", Reason: "NO_SOCKET",
		Orig: RequestTuple(upstreamTuple.Src, upstreamTuple.Dst)}}
	got := string(appendRequestText(nil, &r, time.UTC))
	want := "10:31:07.123456 200 GET app.example/api/items HTTP/1.1 bytes=20 time=1.500ms id=req-1" +
		" client=192.0.2.10:40000 > 192.0.2.1:80 tls sni=app.example alpn=h2 steered=xdp/eth0/PASS/pass_l7 sk-lookup=sk_steer" +
		" route=ingress:default/app app.example/api upstream=default/web:http 192.0.2.1:51000 > 10.1.0.7:8080" +
		" pod=default/web-5d8f node=node-b\n" +
		"  drop 10:31:07.123456 eth0     kernel     DROP     NO_SOCKET           TCP 192.0.2.1:51000 > 10.1.0.7:8080\n"
	if got != want {
		t.Errorf("text:\n got %q\nwant %q", got, want)
	}

	// A local answer: no route, no upstream.
	r = proxyRequest("req-2", 404)
	r.Route, r.Upstream = RequestRoute{Rule: -1}, RequestUpstream{}
	if got := string(appendRequestText(nil, &r, time.UTC)); !strings.Contains(got, " route=-\n") || strings.Contains(got, "upstream=") ||
		strings.Contains(got, "sk-lookup=") {
		t.Errorf("local answer: %q", got)
	}
}

func netipAddrPort(addr string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
}
