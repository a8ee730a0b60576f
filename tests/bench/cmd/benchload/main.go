// Command benchload is the benchmark's load generator for what wrk and
// h2load cannot do:
//
//   - tls-new: a full TLS 1.3 handshake per request. wrk speaks TLS 1.2
//     and resumes sessions, which measures the cheap abbreviated
//     handshake; this client keeps no session cache, so every connection
//     costs the server a key exchange and a signature.
//   - udp-rr: UDP request/response.
//   - tcp-crr and http-rr: HTTP/1.1 timed the way a user waits. tcp-crr
//     opens a new connection per request and times connect() to the
//     answer's last byte (wrk starts its clock after the handshake, so a
//     retransmitted SYN never shows); http-rr times keep-alive requests.
//     Both can run on a fixed schedule (--rate), so that every dataplane
//     is measured at the same offered load.
//
// Usage:
//
//	benchload tls-new --url https://127.0.0.1:PORT/ [--sni NAME] [-c 64] [-d 10s]
//	benchload udp-rr --addr IP:PORT [-c 32] [-d 10s]
//	benchload tcp-crr --addr IP:PORT [-c 32] [-d 10s] [--rate N]
//	benchload http-rr --addr IP:PORT [-c 32] [-d 10s] [--rate N]
//
// tls-new: each of -c workers loops, from its own loopback source address:
// connect, handshake (TLS 1.3, X25519 only, as OpenSSL 3.0 servers offer
// no hybrid post-quantum group), one GET with "Connection: close", read
// the answer, close. Every mode prints one line, and a summary of the
// errors if there were any:
//
//	connections|requests N errors E rate R p50 D p99 D
//
// where the percentiles are of the timed operations.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchload:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "tls-new":
			return tlsNew(args[1:])
		case "udp-rr":
			return udpRR(args[1:])
		case "tcp-crr", "http-rr":
			return httpRR(args[0], args[1:])
		}
	}
	return errors.New("usage: benchload tls-new --url URL [--sni NAME] [-c N] [-d DURATION] | udp-rr --addr IP:PORT [-c N] [-d DURATION] | " +
		"tcp-crr|http-rr --addr IP:PORT [-c N] [-d DURATION] [--rate N]")
}

func tlsNew(args []string) error {
	fs := flag.NewFlagSet("tls-new", flag.ContinueOnError)
	rawURL := fs.String("url", "", "https URL on loopback")
	sni := fs.String("sni", "bench.example", "server name sent in the handshake and Host header")
	conns := fs.Int("c", 64, "concurrent connections")
	dur := fs.Duration("d", 10*time.Second, "duration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "https" {
		return fmt.Errorf("--url %q: want https://127.0.0.1:PORT/", *rawURL)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		// The benchmark must never send load off this machine.
		return fmt.Errorf("--url %s: not a loopback address", *rawURL)
	}
	if *conns < 1 || *conns > 4096 || *dur <= 0 || *dur > 5*time.Minute {
		return errors.New("-c must be 1..4096 and -d at most 5m")
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	cfg := &tls.Config{
		ServerName: *sni,
		// The benchmark's own self-signed certificate; the handshake
		// signature is still verified, as every TLS 1.3 client does.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519},
		// No ClientSessionCache: never resume.
	}
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + *sni + "\r\nUser-Agent: benchload\r\nConnection: close\r\n\r\n")

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs = map[string]int{} // by kind, port numbers left out
		wg   sync.WaitGroup
	)
	start := time.Now()
	for i := range *conns {
		// Each worker has its own loopback source address. A server
		// that closes first keeps every connection in TIME_WAIT for a
		// minute; from one source address the client soon reuses ports
		// of those tuples, and such SYNs fail. 127.0.1.0/24 is loopback
		// like the rest of 127/8, no configuration needed.
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i%250+1))}
		wg.Go(func() {
			var mine []time.Duration
			bad := map[string]int{}
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := once(ctx, src, u.Host, cfg, req); err != nil {
					if ctx.Err() == nil {
						bad[errorKind(err)]++
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			for k, n := range bad {
				errs[k] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	report("connections", lat, errs, time.Since(start))
	return nil
}

var portRE = regexp.MustCompile(`:[0-9]+\b`)

// errorKind groups errors that differ only in port numbers.
func errorKind(err error) string { return portRE.ReplaceAllString(err.Error(), ":*") }

var status200 = []byte("HTTP/1.1 200 ")

// once does one connection: handshake, request, whole response.
func once(ctx context.Context, src *net.TCPAddr, addr string, cfg *tls.Config, req []byte) error {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: src}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if c.ConnectionState().DidResume {
		return errors.New("session resumed")
	}
	if _, err := c.Write(req); err != nil {
		return err
	}
	r := bufio.NewReaderSize(c, 1024)
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, status200) {
		return fmt.Errorf("status %q", strings.TrimSpace(string(line)))
	}
	n := -1
	for {
		h, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(h) <= 2 {
			break
		}
		if k, v, ok := strings.Cut(string(h), ":"); ok && strings.EqualFold(k, "content-length") {
			if n, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
				return err
			}
		}
	}
	if n < 0 {
		return errors.New("no content-length")
	}
	_, err = r.Discard(n)
	if err != nil {
		return err
	}
	// The server closes after answering; waiting for it keeps the
	// TIME_WAIT state on the server, as with any HTTP/1.1 close.
	_, _ = io.Copy(io.Discard, r)
	return nil
}
