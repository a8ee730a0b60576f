// Command podserver stands in for a pod in end-to-end tests and the demo. It
// answers HTTP requests and UDP datagrams with the pod's name and the client
// address it saw, which tells a test both which backend a load balancer
// picked and whether the client's source address survived NAT. Bulk HTTP
// endpoints (see handler) move large bodies both ways.
//
// Usage:
//
//	podserver --name NAME [--http :8080] [--udp :9090]   serve
//	podserver get [--timeout 2s] URL                      one HTTP GET on a new connection, print the body
//	podserver udp [--timeout 2s] ADDR MSG                 send one datagram, print the reply
//	podserver xdp-pass DEV                                attach an XDP_PASS stub to DEV (stays after exit)
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

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
	udpAddr := fs.String("udp", ":9090", "UDP echo listen address, empty to disable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--name is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2)

	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("listen http: %w", err)
		}
		srv := &http.Server{Handler: handler(*name), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(ln) }()
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

// handler serves:
//
//	GET  /                 the Reply line
//	GET  /data?size=N      N bytes of Pattern, the Reply in the X-Reply header
//	POST /upload           the Reply line plus " bytes=N sha256=HEX" of the body
//
// The bulk endpoints move many full-size segments through the datapath, so
// a wrong checksum or a lost frame shows up as a stalled or corrupt transfer.
func handler(name string) http.Handler {
	reply := func(r *http.Request) string {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		return Reply(name, net.ParseIP(host))
	}
	mux := http.NewServeMux()
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
