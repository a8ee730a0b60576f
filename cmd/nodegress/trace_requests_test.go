package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/l7proxy"
)

func TestRequestOnWire(t *testing.T) {
	ap := netip.MustParseAddrPort
	start := time.Date(2025, 3, 4, 10, 31, 7, 0, time.UTC)
	forwarded := l7proxy.RequestRecord{
		ID: "abc", Start: start, Duration: 1500 * time.Microsecond, Upstream: 1200 * time.Microsecond,
		Client: ap("192.0.2.10:40000"), Frontend: ap("192.0.2.1:443"), TLS: true, SNI: "app.example", ALPN: "h2",
		Proto: "HTTP/2.0", Method: "GET", Host: "app.example", Path: "/", Status: 200, Bytes: 20,
		Route:   l7proxy.RequestRoute{Kind: l7proxy.RouteHTTPRoute, Name: "default/app", Rule: 1},
		Service: "default/web:http", UpstreamLocal: ap("192.0.2.1:51000"), UpstreamRemote: ap("10.1.0.7:8080"),
		Pod: "default/web-5d8f", Node: "node-b",
	}
	w := requestOnWire(&forwarded, "node-a")
	b, err := json.Marshal(&w)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"id":"abc"`, `"node":"node-a"`, `"duration_ms":1.5`, `"upstream_ms":1.2`,
		`"client":{"tuple":{"proto":"TCP","src":"192.0.2.10:40000","dst":"192.0.2.1:443"},"tls":true,"sni":"app.example","alpn":"h2"`,
		`"route":{"kind":"httproute","name":"default/app","host":"","path":"","rule":1}`,
		`"upstream":{"service":"default/web:http","tuple":{"proto":"TCP","src":"192.0.2.1:51000","dst":"10.1.0.7:8080"},"pod":"default/web-5d8f","node":"node-b"`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("wire form lacks %s:\n%s", want, b)
		}
	}

	// A request answered by the proxy itself has no upstream connection.
	local := l7proxy.RequestRecord{ID: "def", Status: 404, Route: l7proxy.RequestRoute{Rule: -1}}
	if w := requestOnWire(&local, "node-a"); w.Upstream.Tuple.Dst.IsValid() || w.Upstream.Pod != "" {
		t.Errorf("local answer's upstream %+v", w.Upstream)
	}
}
