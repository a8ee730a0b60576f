package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/l7proxy"
)

func TestProxyProbe(t *testing.T) {
	serve := func(t *testing.T, opts l7proxy.Options) (string, string) {
		p, err := l7proxy.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		hl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = p.ServeHTTP(hl) }()
		go func() { _ = p.ServeHTTPS(sl) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = p.Shutdown(ctx)
		})
		return hl.Addr().String(), sl.Addr().String()
	}
	// A listener that accepts (the kernel does) but is never served.
	stuck, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	httpAddr, httpsAddr := serve(t, l7proxy.Options{})
	ppHTTP, ppHTTPS := serve(t, l7proxy.Options{ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	for _, tc := range []struct {
		name  string
		probe proxyProbe
		ok    bool
	}{
		{"http", proxyProbe{name: "http", addr: httpAddr}, true},
		{"https", proxyProbe{name: "https", addr: httpsAddr, tls: true}, true},
		{"http behind PROXY protocol", proxyProbe{name: "http", addr: ppHTTP, proxyHeader: true}, true},
		{"https behind PROXY protocol", proxyProbe{name: "https", addr: ppHTTPS, tls: true, proxyHeader: true}, true},
		{"without the header it needs", proxyProbe{name: "http", addr: ppHTTP}, false},
		{"accepting, never served", proxyProbe{name: "http", addr: stuck.Addr().String()}, false},
		{"accepting, never served, tls", proxyProbe{name: "https", addr: stuck.Addr().String(), tls: true}, false},
		{"closed", proxyProbe{name: "http", addr: closedAddr}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.probe.probe(context.Background())
			if (err == nil) != tc.ok {
				t.Fatalf("probe: %v, want ok %v", err, tc.ok)
			}
			if d := time.Since(start); d > probeTimeout+time.Second {
				t.Errorf("probe took %s, bounded by %s", d, probeTimeout)
			}
		})
	}
}

func TestAgentHealth(t *testing.T) {
	synced := make(chan struct{})
	wedged := errors.New("a sync has been running for 3m")
	h := &agentHealth{syncLoop: func() error { return nil }, datapath: func() error { return nil }, synced: synced}
	ctx := context.Background()
	if err := h.live(ctx); err != nil {
		t.Fatalf("live: %v", err)
	}
	if err := h.ready(ctx); err == nil {
		t.Error("ready before the first sync")
	}
	close(synced)
	if err := h.ready(ctx); err != nil {
		t.Errorf("ready after the first sync: %v", err)
	}
	h.syncLoop = func() error { return wedged }
	if err := h.live(ctx); !errors.Is(err, wedged) {
		t.Errorf("live with the sync loop wedged: %v", err)
	}
	if err := h.ready(ctx); err == nil {
		t.Error("ready with the sync loop wedged")
	}
	h.syncLoop = func() error { return nil }
	h.datapath = func() error { return errors.New("xdp program no longer attached to eth0") }
	if err := h.live(ctx); err == nil || !strings.Contains(err.Error(), "datapath") {
		t.Errorf("live with the datapath detached: %v", err)
	}
}
