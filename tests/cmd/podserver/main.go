// Command podserver stands in for a pod in end-to-end tests and the demo. It
// answers HTTP requests and UDP datagrams with the pod's name and the client
// address it saw, which tells a test both which backend a load balancer
// picked and whether the client's source address survived NAT. Bulk HTTP
// endpoints (see handler) move large bodies both ways; others echo what the
// pod received (headers, path, protocol), echo WebSocket messages, and
// stream chunks with a trailer, for the L7 proxy's tests.
//
// Usage:
//
//	podserver --name NAME [--http :8080] [--h2c :8081] [--https :8443] [--udp :9090]   serve
//	podserver get [--timeout 2s] URL                      one HTTP GET on a new connection, print the body
//	podserver udp [--timeout 2s] ADDR MSG                 send one datagram, print the reply
//	podserver xdp-pass DEV                                attach an XDP_PASS stub to DEV (stays after exit)
//	podserver gencert --out DIR HOST...                   write ca.crt, tls.crt and tls.key for HOSTs
package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/websocket"

	"github.com/nodegress/nodegress/tests/harness/testcert"
	"github.com/nodegress/nodegress/tests/internal/xdpstub"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "podserver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "get":
			return get(args[1:])
		case "udp":
			return udp(args[1:])
		case "gencert":
			return gencert(args[1:])
		case "xdp-pass":
			if len(args) != 2 {
				return errors.New("usage: podserver xdp-pass DEV")
			}
			return xdpstub.AttachPersistent(args[1])
		}
	}
	return serve(args)
}

// Reply is the answer to every request: the pod's name and the client
// address the pod saw.
func Reply(name string, client net.IP) string {
	return fmt.Sprintf("pod=%s client=%s", name, client)
}

func serve(args []string) error {
	fs := flag.NewFlagSet("podserver", flag.ContinueOnError)
	name := fs.String("name", "", "pod name to answer with (required)")
	httpAddr := fs.String("http", ":8080", "HTTP listen address, empty to disable")
	h2cAddr := fs.String("h2c", "", "listen address serving the same handler over HTTP/1.1 and cleartext HTTP/2 (prior knowledge), empty to disable")
	httpsAddr := fs.String("https", "", "listen address serving the same handler over TLS with a certificate of its own (CN and DNS name: the pod name), empty to disable")
	udpAddr := fs.String("udp", ":9090", "UDP echo listen address, empty to disable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--name is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 3)

	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("listen http: %w", err)
		}
		srv := &http.Server{Handler: handler(*name), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(ln) }()
		defer srv.Close()
	}
	if *h2cAddr != "" {
		ln, err := net.Listen("tcp", *h2cAddr)
		if err != nil {
			return fmt.Errorf("listen h2c: %w", err)
		}
		// HTTP/1.1 stays on so a wrongly configured proxy still gets an
		// answer, and the echoed protocol tells the test what it used.
		var protos http.Protocols
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(true)
		srv := &http.Server{Handler: handler(*name), ReadHeaderTimeout: 10 * time.Second, Protocols: &protos}
		go func() { errc <- srv.Serve(ln) }()
		defer srv.Close()
	}
	if *httpsAddr != "" {
		srv, ln, err := httpsServer(*httpsAddr, *name)
		if err != nil {
			return err
		}
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
		defer srv.Close()
	}
	if *udpAddr != "" {
		pc, err := net.ListenPacket("udp", *udpAddr)
		if err != nil {
			return fmt.Errorf("listen udp: %w", err)
		}
		defer pc.Close()
		go func() { errc <- echo(pc, *name) }()
	}
	// Tests wait for this line: both sockets are bound from here on.
	fmt.Println("ready")

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// httpsServer serves the handler over TLS with a certificate issued at
// start for the pod's name: a client seeing it knows the pod, not a
// proxy, terminated TLS.
func httpsServer(addr, name string) (*http.Server, net.Listener, error) {
	ca, err := testcert.NewCA(name + " CA")
	if err != nil {
		return nil, nil, fmt.Errorf("https certificate: %w", err)
	}
	leaf, err := ca.Issue(name)
	if err != nil {
		return nil, nil, fmt.Errorf("https certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("https certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen https: %w", err)
	}
	return &http.Server{Handler: handler(name), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}, ln, nil
}

// handler serves:
//
//	GET  /                 the Reply line
//	GET  /data?size=N      N bytes of Pattern, the Reply in the X-Reply header
//	POST /upload           the Reply line plus " bytes=N sha256=HEX" of the body
//	GET  /ws               WebSocket: every text message m is answered with "pod=NAME echo=m"
//	GET  /stream?n=N&interval=D   N lines, each flushed, D apart; trailers X-Stream-Chunks, X-Stream-Pod
//	any other path         an Echo of the request as JSON (e.g. /headers)
//
// The bulk endpoints move many full-size segments through the datapath, so
// a wrong checksum or a lost frame shows up as a stalled or corrupt transfer.
func handler(name string) http.Handler {
	reply := func(r *http.Request) string {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		return Reply(name, net.ParseIP(host))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		// The body is read so a POST's size can be checked too.
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Echo{
			Pod:       name,
			Client:    host,
			Method:    r.Method,
			Host:      r.Host,
			Path:      r.URL.Path,
			Query:     r.URL.RawQuery,
			Proto:     r.Proto,
			BodyBytes: n,
			Headers:   r.Header,
		})
	})
	mux.Handle("GET /ws", websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, "pod="+name+" echo="+msg); err != nil {
				return
			}
		}
	}))
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 1 || n > 10000 {
			http.Error(w, "n must be 1..10000", http.StatusBadRequest)
			return
		}
		interval, err := time.ParseDuration(cmp.Or(r.URL.Query().Get("interval"), "0s"))
		if err != nil || interval < 0 || interval > 10*time.Second {
			http.Error(w, "interval must be a duration of 0..10s", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Trailer", "X-Stream-Chunks, X-Stream-Pod")
		rc := http.NewResponseController(w)
		for i := range n {
			if i > 0 {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(interval):
				}
			}
			fmt.Fprintf(w, "chunk %d pod=%s proto=%s\n", i, name, r.Proto)
			if err := rc.Flush(); err != nil {
				return
			}
		}
		w.Header().Set("X-Stream-Chunks", strconv.Itoa(n))
		w.Header().Set("X-Stream-Pod", name)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, reply(r))
	})
	mux.HandleFunc("GET /data", func(w http.ResponseWriter, r *http.Request) {
		size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if err != nil || size < 0 || size > 1<<30 {
			http.Error(w, "size must be 0..1GiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("X-Reply", reply(r))
		_, _ = io.CopyN(w, Pattern(), size)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s bytes=%d sha256=%x\n", reply(r), n, h.Sum(nil))
	})
	return mux
}

// Echo is what the pod server answers on paths it has no other use for:
// the request as the pod received it.
type Echo struct {
	Pod       string      `json:"pod"`
	Client    string      `json:"client"`
	Method    string      `json:"method"`
	Host      string      `json:"host"`
	Path      string      `json:"path"`
	Query     string      `json:"query,omitempty"`
	Proto     string      `json:"proto"`
	BodyBytes int64       `json:"body_bytes"`
	Headers   http.Header `json:"headers"`
}

// Pattern is the endless byte stream /data serves: byte i is i mod 251, a
// prime, so a shifted, repeated or dropped segment never lines up again.
func Pattern() io.Reader { return &pattern{} }

type pattern struct{ off uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.off % 251)
		p.off++
	}
	return len(b), nil
}

func echo(pc net.PacketConn, name string) error {
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("udp read: %w", err)
		}
		ua, _ := from.(*net.UDPAddr)
		var ip net.IP
		if ua != nil {
			ip = ua.IP
		}
		if _, err := pc.WriteTo([]byte(Reply(name, ip)), from); err != nil {
			return fmt.Errorf("udp write: %w", err)
		}
	}
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "whole request timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: podserver get [--timeout D] URL")
	}
	c := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	resp, err := c.Get(fs.Arg(0))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	_, err = os.Stdout.Write(body)
	return err
}

func udp(args []string) error {
	fs := flag.NewFlagSet("udp", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "reply timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: podserver udp [--timeout D] ADDR MSG")
	}
	conn, err := net.Dial("udp", fs.Arg(0))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(*timeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte(fs.Arg(1))); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	fmt.Printf("%s\n", buf[:n])
	return nil
}

// gencert writes a throw-away CA (ca.crt) and a server certificate it
// signed for the given hosts (tls.crt, tls.key) into a directory: what a
// kubernetes.io/tls Secret holds and what a client trusts, without openssl.
func gencert(args []string) error {
	fs := flag.NewFlagSet("gencert", flag.ContinueOnError)
	out := fs.String("out", ".", "directory to write ca.crt, tls.crt and tls.key into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: podserver gencert [--out DIR] HOST...")
	}
	ca, err := testcert.NewCA("podserver demo CA")
	if err != nil {
		return err
	}
	leaf, err := ca.Issue(fs.Args()...)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca.crt", ca.CertPEM, 0o644},
		{"tls.crt", leaf.CertPEM, 0o644},
		{"tls.key", leaf.KeyPEM, 0o600},
	} {
		if err := os.WriteFile(filepath.Join(*out, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}
