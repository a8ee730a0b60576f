package l7proxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// pipelineCase is one client side × upstream kind combination: the
// request pipeline must apply the same policy to each.
type pipelineCase struct {
	name     string
	protocol UpstreamProtocol
	h2       bool // HTTP/2 over TLS, else cleartext
	h2c      bool // cleartext HTTP/2 with prior knowledge, else HTTP/1.1
}

var pipelineCases = []pipelineCase{
	{"h1-client/h1-upstream", ProtocolHTTP, false, false},
	{"h1-client/h2c-upstream", ProtocolH2C, false, false},
	{"h2-client/h1-upstream", ProtocolHTTP, true, false},
	{"h2-client/h2c-upstream", ProtocolH2C, true, false},
	{"h2c-client/h1-upstream", ProtocolHTTP, false, true},
	{"h2c-client/h2c-upstream", ProtocolH2C, false, true},
}

// client returns the case's client and the proxy URL it connects to.
func (pc pipelineCase) client(p *testProxy, host string) (*http.Client, string) {
	switch {
	case pc.h2:
		return tlsClient(host, true), "https://" + p.httpsAddr
	case pc.h2c:
		protos := new(http.Protocols)
		protos.SetUnencryptedHTTP2(true)
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: protos}}, "http://" + p.httpAddr
	}
	return httpClient(), "http://" + p.httpAddr
}

// startDualBackend serves h with HTTP/1.1 and h2c, counting requests.
func startDualBackend(t *testing.T, name string, h http.HandlerFunc) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: netip.MustParseAddrPort(l.Addr().String())}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	b.srv = &http.Server{Protocols: protos, ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			h(w, r)
		})}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// startEchoBackend answers with its name, the request body and the
// forwarding fields it got, as JSON.
func startEchoBackend(t *testing.T, name string) *backend {
	t.Helper()
	return startDualBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		out := map[string]string{"backend": name, "body": string(body), "proto": r.Proto}
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-Ip", "Forwarded"} {
			out[h] = strings.Join(r.Header.Values(h), "|")
		}
		_ = json.NewEncoder(w).Encode(out)
	})
}

func (pc pipelineCase) do(t *testing.T, p *testProxy, method, host string, body io.Reader, hdr map[string]string) (int, map[string]string) {
	t.Helper()
	c, base := pc.client(p, host)
	req, _ := http.NewRequest(method, base+"/", body)
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, host, err)
	}
	defer resp.Body.Close()
	if (pc.h2 || pc.h2c) != (resp.ProtoMajor == 2) {
		t.Fatalf("client spoke %s", resp.Proto)
	}
	raw, _ := io.ReadAll(resp.Body)
	var got map[string]string
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, host, raw, err)
		}
	}
	return resp.StatusCode, got
}

// TestPipelineMatrix runs the pipeline's policy through every client side
// and upstream kind: the forwarded set and its trust rules, the attempt
// loop (a failed connect ejects the endpoint; an idempotent request, body
// included, goes once to another endpoint; a POST is not sent again), and
// the local decisions (404, 413).
func TestPipelineMatrix(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			live := startEchoBackend(t, "live")
			dead := deadAddr(t)
			up := func(name string, eps ...netip.AddrPort) Upstream {
				u := Upstream{Name: name, Protocol: pc.protocol}
				for _, a := range eps {
					u.Endpoints = append(u.Endpoints, Endpoint{Addr: a})
				}
				return u
			}
			cfg := Config{
				Routes: []Route{
					{Host: "echo.example", Path: "/", Upstream: "echo"},
					{Host: "retry.example", Path: "/", Upstream: "retry"},
					{Host: "small.example", Path: "/", Upstream: "echo", Options: RouteOptions{MaxBodyBytes: 4}},
				},
				Upstreams: []Upstream{up("echo", live.addr), up("retry", dead, live.addr)},
				Certificates: []Certificate{{Cert: makeCert(t, "pipeline",
					"echo.example", "retry.example", "small.example", "nowhere.example")}},
			}
			spoofed := map[string]string{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "gopher",
				"X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "1", "X-Real-Ip": "203.0.113.7",
				"Forwarded": "for=203.0.113.7"}
			scheme, port := "http", ""
			if pc.h2 {
				scheme = "https"
			}

			p := startProxy(t, Options{}, cfg)
			if pc.h2 {
				_, port, _ = splitHostPortString(p.httpsAddr)
			} else {
				_, port, _ = splitHostPortString(p.httpAddr)
			}
			code, got := pc.do(t, p, http.MethodGet, "echo.example", nil, spoofed)
			want := map[string]string{"backend": "live", "X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1",
				"X-Forwarded-Proto": scheme, "X-Forwarded-Host": "echo.example", "X-Forwarded-Port": port, "Forwarded": ""}
			if pc.protocol == ProtocolH2C {
				want["proto"] = "HTTP/2.0"
			} else {
				want["proto"] = "HTTP/1.1"
			}
			checkFields(t, "untrusted", code, got, want)

			trusting := startProxy(t, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, cfg)
			code, got = pc.do(t, trusting, http.MethodGet, "echo.example", nil, spoofed)
			checkFields(t, "trusted", code, got, map[string]string{"X-Forwarded-For": "203.0.113.7, 127.0.0.1",
				"X-Real-Ip": "203.0.113.7", "X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.example",
				"X-Forwarded-Port": "1", "Forwarded": "for=203.0.113.7"})

			// Round robin alternates between the dead and the live
			// endpoint: PUTs always arrive, with their body, the first
			// one by the retry after the failed connect.
			hits := live.hits.Load()
			for range 2 {
				code, got = pc.do(t, p, http.MethodPut, "retry.example", strings.NewReader("payload"), nil)
				checkFields(t, "PUT", code, got, map[string]string{"backend": "live", "body": "payload"})
			}
			if n := live.hits.Load() - hits; n != 2 {
				t.Errorf("live backend saw %d PUTs, want 2", n)
			}
			var deadEP *endpoint
			for _, e := range p.state.Load().pools["retry"].all {
				if e.addr == dead {
					deadEP = e
				}
			}
			if deadEP == nil || deadEP.ejectedUntil.Load() == 0 {
				t.Fatal("dead endpoint not ejected")
			}
			// A POST is never sent twice: with the dead endpoint back in
			// rotation, one of two gets 502 and only the other arrives.
			deadEP.ejectedUntil.Store(0)
			hits = live.hits.Load()
			var codes []int
			for range 2 {
				code, _ = pc.do(t, p, http.MethodPost, "retry.example", strings.NewReader("payload"), nil)
				codes = append(codes, code)
			}
			if !(codes[0] == 502 && codes[1] == 200 || codes[0] == 200 && codes[1] == 502) {
				t.Errorf("POST statuses %v, want one 502 and one 200", codes)
			}
			if n := live.hits.Load() - hits; n != 1 {
				t.Errorf("live backend saw %d POSTs, want 1", n)
			}

			hits = live.hits.Load()
			if code, _ = pc.do(t, p, http.MethodGet, "nowhere.example", nil, nil); code != http.StatusNotFound {
				t.Errorf("unknown host: %d, want 404", code)
			}
			if code, _ = pc.do(t, p, http.MethodPost, "small.example", strings.NewReader("too large"), nil); code != http.StatusRequestEntityTooLarge {
				t.Errorf("body over the limit: %d, want 413", code)
			}
			if code, got = pc.do(t, p, http.MethodPost, "small.example", strings.NewReader("ok"), nil); code != 200 || got["body"] != "ok" {
				t.Errorf("body within the limit: %d %v", code, got)
			}
			if n := live.hits.Load() - hits; n != 1 {
				t.Errorf("%d requests reached the upstream, want only the one within limits", n)
			}
		})
	}
}

func checkFields(t *testing.T, what string, code int, got, want map[string]string) {
	t.Helper()
	if code != http.StatusOK {
		t.Fatalf("%s: status %d", what, code)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
		}
	}
}
