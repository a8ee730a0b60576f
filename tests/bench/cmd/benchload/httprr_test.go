package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestAnswerEnd(t *testing.T) {
	tests := []struct {
		name    string
		resp    string
		want    answer
		wantErr bool
	}{
		{"header incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", answer{}, false},
		{"body incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", answer{}, false},
		{"complete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", answer{complete: true}, false},
		{"complete, server closing", "HTTP/1.1 200 OK\r\ncontent-length:5\r\nConnection: close\r\n\r\nhello",
			answer{complete: true, closing: true}, false},
		{"keep-alive said", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", answer{complete: true}, false},
		{"not 200", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", answer{}, true},
		{"no length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", answer{}, true},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", answer{}, true},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", answer{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := answerEnd([]byte(tt.resp))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("answerEnd = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLoopAgainstServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "0123456789abcdefghij")
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	tests := []struct {
		name      string
		keepAlive bool
		conns     int
		rate      float64
		dur       time.Duration
	}{
		{"new connections, closed loop", false, 4, 0, 300 * time.Millisecond},
		{"keep-alive, closed loop", true, 4, 0, 300 * time.Millisecond},
		{"new connections, fixed rate", false, 64, 500, time.Second},
		{"keep-alive, fixed rate", true, 16, 1000, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := newLoop(ap, tt.keepAlive, tt.conns)
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			if err := l.run(tt.dur, tt.rate); err != nil {
				t.Fatal(err)
			}
			if len(l.errs) > 0 {
				t.Errorf("errors: %v", l.errs)
			}
			if len(l.lat) == 0 {
				t.Fatal("no operation completed")
			}
			if tt.rate > 0 {
				// Open loop: the schedule, not the server, sets the count.
				want := tt.rate * tt.dur.Seconds()
				if n := float64(len(l.lat)); n < 0.8*want || n > 1.01*want {
					t.Errorf("%v operations at %v/s for %v, want about %v", n, tt.rate, tt.dur, want)
				}
			}
			for _, d := range l.lat {
				if d <= 0 || d > opTimeout {
					t.Fatalf("latency %v out of range", d)
				}
			}
		})
	}
}

func TestLoopCountsRefusedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there any more
	l, err := newLoop(ap, false, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if err := l.run(100*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if len(l.lat) != 0 || l.errs["connect: connection refused"] == 0 {
		t.Errorf("latencies %d, errors %v: want only refused connections", len(l.lat), l.errs)
	}
}
