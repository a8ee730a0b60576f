//go:build bench

package l7proxy

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// TestServeForLoad runs a proxy for external load tools (wrk) when
// L7PROXY_SERVE is set to the listen address; L7PROXY_BACKEND names the
// one endpoint, L7PROXY_SECONDS how long to
// serve (default 60), L7PROXY_SERVE_TLS an HTTPS (HTTP/2) listen address
// served as well, L7PROXY_CPUPROFILE a file for a CPU profile of the whole
// run. It is how the proxy is measured on one pinned
// core (the bench build tag keeps it out of `go test ./...`):
//
//	go test -tags bench -c -o /tmp/l7.test ./l7proxy
//	L7PROXY_SERVE=127.0.0.1:18080 L7PROXY_BACKEND=127.0.0.1:18081 \
//	    taskset -c 1 /tmp/l7.test -test.run TestServeForLoad
func TestServeForLoad(t *testing.T) {
	addr := os.Getenv("L7PROXY_SERVE")
	if addr == "" {
		t.Skip("L7PROXY_SERVE not set")
	}
	be, err := netip.ParseAddrPort(os.Getenv("L7PROXY_BACKEND"))
	if err != nil || !be.Addr().IsLoopback() {
		t.Fatalf("L7PROXY_BACKEND must be a loopback address: %q", os.Getenv("L7PROXY_BACKEND"))
	}
	secs := 60
	if v := os.Getenv("L7PROXY_SECONDS"); v != "" {
		d, err := time.ParseDuration(v + "s")
		if err != nil {
			t.Fatal(err)
		}
		secs = int(d.Seconds())
	}
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if errs := p.Update(Config{
		Routes:    []Route{{Path: "/", Upstream: "ns/bench:80", Ingress: "ns/bench"}},
		Upstreams: []Upstream{{Name: "ns/bench:80", Namespace: "ns", Service: "bench", Endpoints: []Endpoint{{Addr: be}}}},
	}); len(errs) > 0 {
		t.Fatal(errs)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.ServeHTTP(l) }()
	if a := os.Getenv("L7PROXY_SERVE_TLS"); a != "" {
		tl, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = p.ServeHTTPS(tl) }()
	}
	if f := os.Getenv("L7PROXY_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = out.Close()
		}()
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	time.Sleep(time.Duration(secs) * time.Second)
	runtime.ReadMemStats(&m1)
	t.Logf("allocations: %d objects, %d bytes, %d GC cycles", m1.Mallocs-m0.Mallocs, m1.TotalAlloc-m0.TotalAlloc, m1.NumGC-m0.NumGC)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
}
