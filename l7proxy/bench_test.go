package l7proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// benchBody is the 20-byte response the comparison uses.
var benchBody = []byte("0123456789abcdefghij")

// rawClient is a minimal keep-alive HTTP/1.1 client for load: it costs
// far less CPU than http.Client, so the benchmark measures the server
// side rather than the client.
type rawClient struct {
	c   net.Conn
	r   *bufio.Reader
	req []byte
}

func newRawClient(addr, host string) (*rawClient, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &rawClient{c: c, r: bufio.NewReaderSize(c, 4096),
		req: []byte("GET /bench HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: bench\r\n\r\n")}, nil
}

var clPrefix = []byte("content-length:")

// do sends one request and reads the response; it understands just enough
// HTTP (status line, Content-Length) for the benchmark's backend.
func (rc *rawClient) do() error {
	_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write(rc.req); err != nil {
		return err
	}
	status, err := rc.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200")) {
		return fmt.Errorf("status %q", status)
	}
	n := -1
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > len(clPrefix) && bytes.EqualFold(line[:len(clPrefix)], clPrefix) {
			n, err = strconv.Atoi(string(bytes.TrimSpace(line[len(clPrefix):])))
			if err != nil {
				return err
			}
		}
	}
	if n < 0 {
		return fmt.Errorf("no content-length")
	}
	_, err = rc.r.Discard(n)
	return err
}

func benchBackend(b *testing.B) *backend {
	return startBackend(b, "bench", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{"20"}
		_, _ = w.Write(benchBody)
	}))
}

// BenchmarkProxy measures small keep-alive HTTP/1.1 requests with 64
// concurrent connections, through the proxy and directly against the same
// backend. Client, proxy and backend share this process and its cores, so
// compare the two results rather than reading either as an absolute
// figure. allocs/op includes the backend's allocations; the difference of
// the two runs is the proxy's.
func BenchmarkProxy(b *testing.B) {
	be := benchBackend(b)
	b.Run("direct", func(b *testing.B) { runLoad(b, be.addr.String(), "bench.example") })
	p := startProxy(b, Options{}, benchConfig(be))
	if p.access != nil {
		b.Fatal("access log on")
	}
	b.Run("proxy", func(b *testing.B) { runLoad(b, p.httpAddr, "bench.example") })
}

// BenchmarkProxyGateway is BenchmarkProxy's proxy case through a Gateway
// listener: the same backend behind one HTTPRoute (a hostname, a path
// prefix and a header-free rule) on the proxy's own frontend. Compare it
// with BenchmarkProxy/proxy of the same run.
func BenchmarkProxyGateway(b *testing.B) {
	be := benchBackend(b)
	p := startProxy(b, Options{}, Config{})
	cfg := benchConfig(be)
	cfg.Routes = nil
	cfg.Listeners = []Listener{{Name: "ns/gw/http", Frontends: []netip.AddrPort{netip.MustParseAddrPort(p.httpAddr)},
		Routes: []HTTPRoute{{Source: "ns/bench", Hostnames: []string{"bench.example"}, Rules: []HTTPRouteRule{{
			Matches:  []HTTPMatch{{PathType: PathPrefix, Path: "/"}},
			Backends: []WeightedBackend{{Upstream: "ns/bench:80", Weight: 1}},
		}}}}}}
	if errs := p.Update(cfg); len(errs) > 0 {
		b.Fatal(errs)
	}
	runLoad(b, p.httpAddr, "bench.example")
}

func benchConfig(be *backend) Config {
	return Config{
		Routes:    []Route{{Host: "bench.example", Path: "/", Upstream: "ns/bench:80", Ingress: "ns/bench"}},
		Upstreams: []Upstream{{Name: "ns/bench:80", Namespace: "ns", Service: "bench", Endpoints: ep(be)}},
	}
}

// BenchmarkProxyAccessLog is BenchmarkProxy's proxy case with the access
// log writing to io.Discard.
func BenchmarkProxyAccessLog(b *testing.B) {
	be := benchBackend(b)
	p := startProxy(b, Options{AccessLog: io.Discard}, benchConfig(be))
	runLoad(b, p.httpAddr, "bench.example")
}

func runLoad(b *testing.B, addr, host string) {
	// 32 goroutines per P: 64 connections on two cores, like wrk -c64.
	b.SetParallelism(32)
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rc, err := newRawClient(addr, host)
		if err != nil {
			b.Error(err)
			return
		}
		defer rc.c.Close()
		for pb.Next() {
			if err := rc.do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkProxyH2 measures small HTTP/2 requests over TLS (64 concurrent
// streams on a few connections) through the proxy, which sends them to the
// upstream over its pooled HTTP/1.1 connections. The client shares the
// process, so compare runs rather than reading one as an absolute figure.
func BenchmarkProxyH2(b *testing.B) {
	be := benchBackend(b)
	p := startProxy(b, Options{}, benchConfig(be))
	c := tlsClient("bench.example", true)
	url := "https://" + p.httpsAddr + "/"
	b.SetParallelism(32)
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Host = "bench.example"
			res, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
				b.Errorf("%s %d", res.Proto, res.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
