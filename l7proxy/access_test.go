package l7proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"
)

// accessConfig serves host "a.example" from backends bs with access
// control a, under the Ingress "ns/ing".
func accessConfig(a *Access, bs ...*backend) Config {
	return Config{
		Routes:    []Route{{Host: "a.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/ing", Options: RouteOptions{Access: a}}},
		Upstreams: []Upstream{{Name: "ns/a:80", Namespace: "ns", Service: "a", Port: "80", Endpoints: ep(bs...)}},
	}
}

// do sends a request with extra header fields and returns the response
// (body read into the string).
func do(t *testing.T, c *http.Client, method, url, host string, fields map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range fields {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func deniedCount(p *Proxy, route, reason string) float64 {
	return testutil.ToFloat64(p.metrics.denied.WithLabelValues(route, reason))
}

func TestSourceRanges(t *testing.T) {
	b := startBackend(t, "a", nil)
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		xff     string
		allow   []netip.Prefix
		deny    []netip.Prefix
		want    int
	}{
		{name: "allowed peer", allow: pfx("127.0.0.0/8"), want: 200},
		{name: "peer not in allow list", allow: pfx("10.0.0.0/8"), want: 403},
		{name: "denied peer", deny: pfx("127.0.0.1/32"), want: 403},
		{name: "deny wins over allow", allow: pfx("127.0.0.0/8"), deny: pfx("127.0.0.1/32"), want: 403},
		{name: "untrusted peer cannot forge its address", allow: pfx("10.0.0.0/8"), xff: "10.1.2.3", want: 403},
		{name: "trusted proxy's client allowed", trusted: pfx("127.0.0.0/8"), allow: pfx("10.0.0.0/8"), xff: "10.1.2.3", want: 200},
		{name: "trusted proxy's client denied", trusted: pfx("127.0.0.0/8"), deny: pfx("10.1.2.3/32"), xff: "10.1.2.3", want: 403},
		{name: "ipv6 client against ipv4 list", trusted: pfx("127.0.0.0/8"), allow: pfx("10.0.0.0/8"), xff: "2001:db8::1", want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, Options{TrustedProxies: tt.trusted}, accessConfig(&Access{Allow: tt.allow, Deny: tt.deny}, b))
			fields := map[string]string{}
			if tt.xff != "" {
				fields["X-Forwarded-For"] = tt.xff
			}
			resp, _ := do(t, httpClient(), "GET", "http://"+p.httpAddr+"/", "a.example", fields)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if want := map[bool]float64{true: 1, false: 0}[tt.want == 403]; deniedCount(p.Proxy, "ns/ing", denySourceRange) != want {
				t.Errorf("denied source_range = %v, want %v", deniedCount(p.Proxy, "ns/ing", denySourceRange), want)
			}
		})
	}
}

func TestPasswordHashes(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, hash, password string
		valid, match         bool
	}{
		// Reference values from `openssl passwd -apr1 -salt abcdefgh`
		// and `htpasswd -s`.
		{"apr1", "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/", "secret", true, true},
		{"apr1 wrong password", "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/", "Secret", true, false},
		{"sha", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret", true, true},
		{"sha wrong password", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret2", true, false},
		{"bcrypt", string(bc), "secret", true, true},
		{"bcrypt $2y$", "$2y$" + string(bc[4:]), "secret", true, true},
		{"bcrypt wrong password", string(bc), "nope", true, false},
		{"des crypt refused", "abJnggxhB/yWI", "secret", false, false},
		{"plain text refused", "secret", "secret", false, false},
		{"apr1 without hash", "$apr1$abcdefgh$", "", false, false},
		{"apr1 long salt", "$apr1$abcdefghi$h9FWgUz3n9YxylKLlR5SQ/", "", false, false},
		{"sha not base64", "{SHA}!!!", "", false, false},
		{"sha short", "{SHA}AAAA", "", false, false},
		{"bcrypt truncated", "$2y$10$abc", "", false, false},
		{"bcrypt cost too high", "$2y$18$" + string(bc[7:]), "", false, false},
		{"bcrypt cost above 14 refused", "$2y$15$" + string(bc[7:]), "", false, false},
		{"bcrypt too long", string(bc) + "x", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPasswordHash(tt.hash)
			if (err == nil) != tt.valid {
				t.Fatalf("CheckPasswordHash(%q) = %v, want valid %v", tt.hash, err, tt.valid)
			}
			if !tt.valid {
				return
			}
			if got := verifyPassword(tt.hash, tt.password); got != tt.match {
				t.Errorf("verifyPassword = %v, want %v", got, tt.match)
			}
		})
	}
}

func TestParseHtpasswd(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{"one user", "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n", map[string]string{"alice": "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="}, ""},
		{"crlf, comments, blank lines, first wins",
			"# users\r\n\r\nalice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\r\nbob:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\r\nalice:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n",
			map[string]string{"alice": "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "bob": "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/"}, ""},
		{"no colon", "alice\n", nil, "line 1"},
		{"empty user", ":{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n", nil, "line 1"},
		{"bad hash", "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nbob:plain\n", nil, "line 2"},
		{"empty file", "\n# nothing\n", nil, "no user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHtpasswd([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzParseHtpasswd(f *testing.F) {
	f.Add([]byte("alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"))
	f.Add([]byte("bob:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\r\n# c\n"))
	f.Add([]byte("carol:$2y$04$abcdefghijklmnopqrstuu5bLGGyLyn7Tsg8jFPkJMYGjfYQyeN9q\n"))
	f.Add([]byte(":\n:::\n$apr1$"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := ParseHtpasswd(data)
		if err != nil {
			return
		}
		for u, h := range users {
			if u == "" || CheckPasswordHash(h) != nil {
				t.Fatalf("accepted user %q with hash %q", u, h)
			}
			if !strings.HasPrefix(h, "$2") { // bcrypt: slow by design
				_ = verifyPassword(h, "x")
			}
		}
	})
}

func TestBasicAuth(t *testing.T) {
	b := startBackend(t, "a", nil)
	users, err := ParseHtpasswd([]byte("alice:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\nbob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"))
	if err != nil {
		t.Fatal(err)
	}
	ba, err := NewBasicAuth(`Team "A"`, users)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, Options{}, Config{
		Routes: []Route{
			{Host: "a.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/ing", Options: RouteOptions{Access: &Access{BasicAuth: ba}}},
			{Host: "broken.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/broken", Options: RouteOptions{Access: &Access{Denied: "secret missing"}}},
		},
		Upstreams: []Upstream{{Name: "ns/a:80", Endpoints: ep(b)}},
	})
	tests := []struct {
		name, host, auth string
		want             int
	}{
		{"no credentials", "a.example", "", 401},
		{"apr1 user", "a.example", "alice:secret", 200},
		{"apr1 user again (remembered)", "a.example", "alice:secret", 200},
		{"sha user", "a.example", "bob:secret", 200},
		{"wrong password", "a.example", "alice:nope", 401},
		{"unknown user", "a.example", "carol:secret", 401},
		{"misconfigured route fails closed", "broken.example", "alice:secret", 503},
	}
	for _, tt := range tests {
		for _, proto := range []string{"h1", "h2"} {
			t.Run(tt.name+"/"+proto, func(t *testing.T) {
				before := b.hits.Load()
				c, url := httpClient(), "http://"+p.httpAddr+"/"
				if proto == "h2" {
					c, url = h2Client(), "https://"+p.httpsAddr+"/"
				}
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = tt.host
				if tt.auth != "" {
					u, pw, _ := strings.Cut(tt.auth, ":")
					req.SetBasicAuth(u, pw)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
				}
				if tt.want == 401 {
					if got := resp.Header.Get("Www-Authenticate"); got != `Basic realm="Team \"A\""` {
						t.Errorf("WWW-Authenticate %q", got)
					}
				}
				if reached := b.hits.Load() > before; reached != (tt.want == 200) {
					t.Errorf("backend reached: %v, want %v", reached, tt.want == 200)
				}
			})
		}
	}
	if got := deniedCount(p.Proxy, "ns/broken", denyMisconfig); got != 2 {
		t.Errorf("misconfigured denials %v, want 2", got)
	}
}

func TestRateLimitRequests(t *testing.T) {
	b := startBackend(t, "a", nil)
	tests := []struct {
		name     string
		rl       RateLimit
		xff      string
		n        int
		wantPass int
		wantCode int
	}{
		// Burst: rate × multiplier, and one more, at once (nginx's
		// burst with nodelay). Per-minute rates, so that a slow machine
		// does not refill the allowance under way (TestGCRA covers the
		// per-second arithmetic on a fixed clock).
		{"burst", RateLimit{RPM: 2, BurstMultiplier: 2}, "", 10, 5, 503},
		{"default multiplier 5", RateLimit{RPM: 1}, "", 10, 6, 503},
		{"multiplier 1", RateLimit{RPM: 2, BurstMultiplier: 1}, "", 10, 3, 503},
		{"per second and per minute: the stricter wins", RateLimit{RPS: 100, RPM: 1, BurstMultiplier: 1}, "", 10, 2, 503},
		{"custom status", RateLimit{RPM: 1, BurstMultiplier: 1, Status: 429}, "", 5, 2, 429},
		{"exempt client", RateLimit{RPM: 1, BurstMultiplier: 1, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, "", 10, 10, 0},
		{"trusted proxy's client is limited on its own", RateLimit{RPM: 1, BurstMultiplier: 1}, "10.9.9.9", 5, 2, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := tt.rl
			p := startProxy(t, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
				accessConfig(&Access{RateLimit: &rl}, b))
			// Concurrent: the counters must hold under contention.
			var pass, limited atomic.Int64
			var wg sync.WaitGroup
			c := httpClient()
			for range tt.n {
				wg.Go(func() {
					fields := map[string]string{}
					if tt.xff != "" {
						fields["X-Forwarded-For"] = tt.xff
					}
					resp, _ := do(t, c, "GET", "http://"+p.httpAddr+"/", "a.example", fields)
					switch resp.StatusCode {
					case 200:
						pass.Add(1)
					case tt.wantCode:
						limited.Add(1)
					default:
						t.Errorf("status %d", resp.StatusCode)
					}
				})
			}
			wg.Wait()
			if pass.Load() != int64(tt.wantPass) {
				t.Errorf("%d requests passed, want %d", pass.Load(), tt.wantPass)
			}
			if got := deniedCount(p.Proxy, "ns/ing", denyRateLimit); got != float64(tt.n-tt.wantPass) {
				t.Errorf("rate_limit denials %v, want %d", got, tt.n-tt.wantPass)
			}
		})
	}
}

func TestRateLimitConnections(t *testing.T) {
	release := make(chan struct{})
	var inside atomic.Int64
	b := startBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside.Add(1)
		<-release
		_, _ = io.WriteString(w, "slow")
	}))
	p := startProxy(t, Options{}, accessConfig(&Access{RateLimit: &RateLimit{Connections: 2}}, b))
	c := httpClient()
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			resp, _ := do(t, c, "GET", "http://"+p.httpAddr+"/", "a.example", nil)
			codes <- resp.StatusCode
		}()
	}
	waitFor(t, "two requests at the backend", func() bool { return inside.Load() == 2 })
	if resp, _ := do(t, c, "GET", "http://"+p.httpAddr+"/", "a.example", nil); resp.StatusCode != 503 {
		t.Errorf("third concurrent request: %d, want 503", resp.StatusCode)
	}
	close(release)
	for range 2 {
		if code := <-codes; code != 200 {
			t.Errorf("held request: %d", code)
		}
	}
	// The slots are released with the responses.
	if resp, _ := do(t, c, "GET", "http://"+p.httpAddr+"/", "a.example", nil); resp.StatusCode != 200 {
		t.Errorf("after release: %d, want 200", resp.StatusCode)
	}
	if got := deniedCount(p.Proxy, "ns/ing", denyConnLimit); got != 1 {
		t.Errorf("connection_limit denials %v, want 1", got)
	}
}

// TestGCRA checks the per-second arithmetic on a fixed clock: a burst at
// once, then one request per interval.
func TestGCRA(t *testing.T) {
	l := newRateLimiter(&RateLimit{RPS: 10, BurstMultiplier: 2}, 64)
	a := netip.MustParseAddr("192.0.2.1")
	t0 := time.Now().UnixNano()
	ms := int64(time.Millisecond)
	steps := []struct {
		at   int64 // ms after t0
		n    int
		pass int
	}{
		{0, 30, 21},    // burst 20, and one more
		{50, 5, 0},     // half an interval: nothing back yet
		{100, 5, 1},    // one interval (100ms at 10/s): one back
		{400, 5, 3},    // three more intervals
		{5000, 30, 21}, // rested: the whole burst again
	}
	for _, s := range steps {
		var tx txn
		pass := 0
		for range s.n {
			if code, _ := l.admitAt(&tx, a, t0+s.at*ms); code == 0 {
				pass++
			}
		}
		if pass != s.pass {
			t.Errorf("at %dms: %d of %d passed, want %d", s.at, pass, s.n, s.pass)
		}
	}
}

// TestRateLimitMemoryCap floods a limiter with distinct addresses: it
// must keep within its cap, and keep limiting a client that is active.
func TestRateLimitMemoryCap(t *testing.T) {
	tests := []struct {
		name       string
		maxClients int
		flood      int
	}{
		{"small cap", 64, 10000},
		{"cap above flood", 1 << 14, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newRateLimiter(&RateLimit{RPS: 1, BurstMultiplier: 1}, tt.maxClients)
			now := time.Now().UnixNano()
			var tx txn
			for i := range tt.flood {
				a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				if code, _ := l.admitAt(&tx, a, now); code != 0 {
					t.Fatalf("first request of %v limited", a)
				}
			}
			if n := l.clients(); n > max(tt.maxClients, limiterShards) || n > tt.flood {
				t.Fatalf("limiter tracks %d clients, cap %d", n, tt.maxClients)
			}
			// Entries back to a full allowance go at the next sweep.
			l.sweep(now + int64(time.Hour))
			if n := l.clients(); n != 0 {
				t.Errorf("%d clients left after sweep", n)
			}
		})
	}
}

func TestCookieAffinity(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", nil)
	aff := &CookieAffinity{Name: "INGRESSCOOKIE", MaxAge: 60, SameSite: "Lax", Secure: true, Key: []byte("k")}
	cfg := accessConfig(&Access{Affinity: aff}, a, b)
	cfg.Routes[0].Path = "/app"
	p := startProxy(t, Options{}, cfg)
	c := httpClient()
	url := "http://" + p.httpAddr + "/app/x"

	resp, first := do(t, c, "GET", url, "a.example", nil)
	sc := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"INGRESSCOOKIE=", "Path=/app", "Max-Age=60", "SameSite=Lax", "Secure", "HttpOnly"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %q", sc, want)
		}
	}
	if strings.Contains(sc, "127.0.0.1") || strings.Contains(sc, fmt.Sprint(a.addr.Port())) {
		t.Errorf("cookie reveals the endpoint: %q", sc)
	}
	cookie := strings.SplitN(sc, ";", 2)[0]
	for i := range 10 {
		resp, body := do(t, c, "GET", url, "a.example", map[string]string{"Cookie": "other=1; " + cookie})
		if body != first {
			t.Fatalf("request %d went to %q, want %q", i, body, first)
		}
		if resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("cookie re-issued while its endpoint is there")
		}
	}
	// The endpoint goes away: the request goes to the other one, with a
	// new cookie.
	other := b
	if first == "b" {
		other = a
	}
	cfg.Upstreams[0].Endpoints = ep(other)
	if errs := p.Update(cfg); len(errs) > 0 {
		t.Fatal(errs)
	}
	resp, body := do(t, c, "GET", url, "a.example", map[string]string{"Cookie": cookie})
	if body != other.name {
		t.Errorf("after removal went to %q, want %q", body, other.name)
	}
	if nc := resp.Header.Get("Set-Cookie"); nc == "" || strings.SplitN(nc, ";", 2)[0] == cookie {
		t.Errorf("cookie not re-issued: %q", nc)
	}
	// A forged cookie is just a miss.
	if resp, _ := do(t, c, "GET", url, "a.example", map[string]string{"Cookie": "INGRESSCOOKIE=forged"}); resp.Header.Get("Set-Cookie") == "" {
		t.Error("forged cookie accepted")
	}
}

func TestCookieAffinityChangeOnFailure(t *testing.T) {
	live := startBackend(t, "live", nil)
	dead := deadAddr(t)
	for _, change := range []bool{false, true} {
		t.Run(fmt.Sprint("change=", change), func(t *testing.T) {
			aff := &CookieAffinity{Name: "S", ChangeOnFailure: change, Key: []byte("k")}
			cfg := accessConfig(&Access{Affinity: aff})
			cfg.Upstreams[0].Endpoints = []Endpoint{{Addr: dead}, {Addr: live.addr}}
			p := startProxy(t, Options{}, cfg)
			deadTok := aff.token(&endpoint{addr: dead, hostport: dead.String()})
			resp, body := do(t, httpClient(), "GET", "http://"+p.httpAddr+"/", "a.example", map[string]string{"Cookie": "S=" + deadTok})
			if body != "live" {
				t.Fatalf("went to %q", body)
			}
			got := resp.Header.Get("Set-Cookie")
			if change != (got != "") {
				t.Errorf("Set-Cookie %q with change-on-failure %v", got, change)
			}
		})
	}
}

func TestExternalAuth(t *testing.T) {
	var seen atomic.Pointer[http.Header]
	auth := startBackend(t, "auth", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("X-Got-Method", r.Method)
		h.Set("X-Got-Path", r.URL.Path)
		seen.Store(&h)
		switch r.Header.Get("Authorization") {
		case "yes":
			w.Header().Set("X-Auth-User", "alice")
			w.Header().Add("Set-Cookie", "session=1")
		case "forbidden":
			w.WriteHeader(403)
		case "broken":
			w.WriteHeader(502)
		default:
			w.Header().Set("Www-Authenticate", `Bearer realm="x"`)
			w.WriteHeader(401)
		}
	}))
	var upstreamUser atomic.Value
	b := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamUser.Store(r.Header.Get("X-Auth-User") + "|" + r.Header.Get("X-Auth-Group"))
		_, _ = io.WriteString(w, "app")
	}))
	authURL := "http://" + auth.addr.String() + "/check?host=$host"
	deadURL := "http://" + deadAddr(t).String() + "/check"
	cfg := Config{
		Routes: []Route{
			{Host: "a.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/ing", Options: RouteOptions{Access: &Access{ExternalAuth: &ExternalAuth{
				URL: authURL, ResponseHeaders: []string{"X-Auth-User", "X-Auth-Group"}}}}},
			{Host: "signin.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/signin", Options: RouteOptions{Access: &Access{ExternalAuth: &ExternalAuth{
				URL: authURL, SigninURL: "https://login.example/start"}}}},
			{Host: "dead.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/dead", Options: RouteOptions{Access: &Access{ExternalAuth: &ExternalAuth{
				URL: deadURL, Timeout: 2 * time.Second}}}},
		},
		Upstreams: []Upstream{{Name: "ns/a:80", Endpoints: ep(b)}},
	}
	p := startProxy(t, Options{}, cfg)
	c := httpClient()
	tests := []struct {
		name, host, authz string
		want              int
		wantLocation      string
		wantUser          string
	}{
		{"allowed, headers copied", "a.example", "yes", 200, "", "alice|"},
		{"unauthorized", "a.example", "", 401, "", ""},
		{"forbidden", "a.example", "forbidden", 403, "", ""},
		{"auth service error fails closed", "a.example", "broken", 500, "", ""},
		{"sign-in redirect", "signin.example", "", 302, "https://login.example/start?rd=http://signin.example%2Fp%3Fq%3D1", ""},
		{"unreachable auth service fails closed", "dead.example", "yes", 500, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.hits.Load()
			upstreamUser.Store("")
			fields := map[string]string{"X-Auth-User": "mallory", "X-Auth-Group": "admins"}
			if tt.authz != "" {
				fields["Authorization"] = tt.authz
			}
			resp, _ := do(t, c, "POST", "http://"+p.httpAddr+"/p?q=1", tt.host, fields)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if got := resp.Header.Get("Location"); got != tt.wantLocation {
				t.Errorf("Location %q, want %q", got, tt.wantLocation)
			}
			if reached := b.hits.Load() > before; reached != (tt.want == 200) {
				t.Errorf("backend reached: %v", reached)
			}
			if tt.want == 200 {
				// A field the auth answer lacks is removed, not passed on
				// from the client.
				if got := upstreamUser.Load(); got != tt.wantUser {
					t.Errorf("upstream saw user|group %q, want %q", got, tt.wantUser)
				}
				if got := resp.Header.Get("Set-Cookie"); got != "session=1" {
					t.Errorf("auth cookie %q not passed to the client", got)
				}
			}
			if tt.want == 401 && resp.Header.Get("Www-Authenticate") != `Bearer realm="x"` {
				t.Errorf("WWW-Authenticate %q not passed on", resp.Header.Get("Www-Authenticate"))
			}
		})
	}
	h := seen.Load()
	if h == nil {
		t.Fatal("auth service never asked")
	}
	for k, want := range map[string]string{
		// The last request that reached the auth service.
		"X-Original-Url":    "http://signin.example/p?q=1",
		"X-Original-Method": "POST",
		"X-Got-Method":      "GET",
		"X-Got-Path":        "/check",
		"X-Real-Ip":         "127.0.0.1",
		"X-Forwarded-For":   "127.0.0.1",
		"Content-Length":    "",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("auth request %s = %q, want %q", k, got, want)
		}
	}
	if got := deniedCount(p.Proxy, "ns/dead", denyExtAuthErr); got != 1 {
		t.Errorf("external_auth_error denials %v, want 1", got)
	}
}

func TestCheckAuthURL(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"http://auth.ns.svc/check", true},
		{"https://$host/oauth2/auth", true},
		{"https://login.example/start?rd=$escaped_request_uri", true},
		{"http://x/$request_uri$uri", false},
		{"/relative", false},
		{"ftp://x/", false},
		{"http://", false},
		{"http://x/%zz", false},
	}
	for _, tt := range tests {
		if err := CheckAuthURL(tt.in); (err == nil) != tt.ok {
			t.Errorf("CheckAuthURL(%q) = %v, want ok %v", tt.in, err, tt.ok)
		}
	}
}

func TestErrorPages(t *testing.T) {
	app := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			w.WriteHeader(404)
			_, _ = io.WriteString(w, "app's own 404")
		case "/teapot":
			w.WriteHeader(418)
			_, _ = io.WriteString(w, "teapot")
		default:
			_, _ = io.WriteString(w, "app")
		}
	}))
	def := startBackend(t, "default", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		code := 200
		fmt.Sscan(r.Header.Get("X-Code"), &code)
		w.WriteHeader(code)
		fmt.Fprintf(w, "page code=%s format=%s uri=%s ns=%s ing=%s svc=%s port=%s id=%t",
			r.Header.Get("X-Code"), r.Header.Get("X-Format"), r.Header.Get("X-Original-Uri"), r.Header.Get("X-Namespace"),
			r.Header.Get("X-Ingress-Name"), r.Header.Get("X-Service-Name"), r.Header.Get("X-Service-Port"), r.Header.Get("X-Request-Id") != "")
	}))
	acc := &Access{ErrorCodes: []int{404, 503}, DefaultUpstream: "ns/def:80"}
	cfg := Config{
		Routes: []Route{
			{Host: "a.example", Path: "/", Upstream: "ns/app:80", Ingress: "ns/ing", Options: RouteOptions{Access: acc}},
			{Host: "empty.example", Path: "/", Upstream: "ns/empty:80", Ingress: "ns/ing", Options: RouteOptions{Access: acc}},
		},
		Upstreams: []Upstream{
			{Name: "ns/app:80", Namespace: "ns", Service: "app", Port: "http", Endpoints: ep(app)},
			{Name: "ns/empty:80", Namespace: "ns", Service: "empty", Port: "80"},
			{Name: "ns/def:80", Namespace: "ns", Service: "def", Port: "80", Endpoints: ep(def)},
		},
	}
	p := startProxy(t, Options{}, cfg)
	tests := []struct {
		name, host, path string
		want             int
		wantBody         string
	}{
		{"listed code replaced", "a.example", "/missing", 404, "page code=404 format=text/html uri=/missing ns=ns ing=ing svc=app port=http id=true"},
		{"other code passed", "a.example", "/teapot", 418, "teapot"},
		{"success passed", "a.example", "/", 200, "app"},
		{"no endpoints: default backend serves", "empty.example", "/x", 503, "page code=503 format=text/html uri= ns=ns ing=ing svc=empty port=80 id=true"},
	}
	for _, tt := range tests {
		for _, proto := range []string{"h1", "h2"} {
			t.Run(tt.name+"/"+proto, func(t *testing.T) {
				c, url := httpClient(), "http://"+p.httpAddr+tt.path
				if proto == "h2" {
					c, url = h2Client(), "https://"+p.httpsAddr+tt.path
				}
				resp, body := do(t, c, "GET", url, tt.host, map[string]string{"Accept": "text/html"})
				if resp.StatusCode != tt.want || body != tt.wantBody {
					t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.want, tt.wantBody)
				}
			})
		}
	}
}

// TestErrorPagesDefaultBackendDown: the client gets the original status
// when the default backend cannot answer.
func TestErrorPagesDefaultBackendDown(t *testing.T) {
	app := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) }))
	cfg := accessConfig(&Access{ErrorCodes: []int{404}, DefaultUpstream: "ns/def:80"}, app)
	cfg.Upstreams = append(cfg.Upstreams, Upstream{Name: "ns/def:80", Endpoints: []Endpoint{{Addr: deadAddr(t)}}})
	p := startProxy(t, Options{}, cfg)
	resp, body := do(t, httpClient(), "GET", "http://"+p.httpAddr+"/", "a.example", nil)
	if resp.StatusCode != 404 || body != "Not Found\n" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}

func TestExternalAuthCache(t *testing.T) {
	var asked atomic.Int64
	auth := startBackend(t, "auth", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		switch r.Header.Get("Authorization") {
		case "alice":
			w.Header().Set("X-Auth-User", "alice")
		case "bob":
			w.Header().Set("X-Auth-User", "bob")
		case "forbidden":
			w.WriteHeader(403)
		default:
			w.WriteHeader(401)
		}
	}))
	b := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "user="+r.Header.Get("X-Auth-User"))
	}))
	p := startProxy(t, Options{}, accessConfig(&Access{ExternalAuth: &ExternalAuth{
		URL: "http://" + auth.addr.String() + "/", ResponseHeaders: []string{"X-Auth-User"}, CacheKey: "$http_authorization",
	}}, b))
	c := httpClient()
	tests := []struct {
		name, authz string
		want        int
		wantBody    string
		wantAsked   int64 // auth requests so far
	}{
		{"first alice asks", "alice", 200, "user=alice", 1},
		{"alice again is cached, headers included", "alice", 200, "user=alice", 1},
		{"bob has a key of his own", "bob", 200, "user=bob", 2},
		{"no credentials asks", "", 401, "", 3},
		{"401 is cached too", "", 401, "", 3},
		{"403 is not cached by default", "forbidden", 403, "", 4},
		{"403 asks again", "forbidden", 403, "", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := map[string]string{}
			if tt.authz != "" {
				fields["Authorization"] = tt.authz
			}
			resp, body := do(t, c, "GET", "http://"+p.httpAddr+"/", "a.example", fields)
			if resp.StatusCode != tt.want || tt.want == 200 && body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.want, tt.wantBody)
			}
			if got := asked.Load(); got != tt.wantAsked {
				t.Errorf("auth service asked %d times, want %d", got, tt.wantAsked)
			}
		})
	}
}

func TestAuthCacheBounded(t *testing.T) {
	c := newAuthCache(8)
	now := time.Now()
	for i := range 100 {
		c.put(fmt.Sprint("k", i), 200, http.Header{}, time.Minute, now)
	}
	if c.len() > 8 {
		t.Fatalf("cache holds %d entries, cap 8", c.len())
	}
	c.put("fresh", 200, http.Header{}, time.Minute, now)
	if _, _, ok := c.get("fresh", now.Add(59*time.Second)); !ok {
		t.Error("fresh entry missing")
	}
	if _, _, ok := c.get("fresh", now.Add(time.Minute)); ok {
		t.Error("expired entry served")
	}
	c.put(strings.Repeat("x", maxAuthCacheKey+1), 200, http.Header{}, time.Minute, now)
	if _, _, ok := c.get(strings.Repeat("x", maxAuthCacheKey+1), now); ok {
		t.Error("oversized key kept")
	}
}

func TestCheckAuthCacheKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"$remote_user$http_authorization", true},
		{"${cookie_session}-$host$request_uri", true},
		{"$remote_addr", true},
		{"static", true},
		{"$http_", false},
		{"$upstream_addr", false},
		{"${unknown", false},
		{"  ", false},
	}
	for _, tt := range tests {
		if err := CheckAuthCacheKey(tt.key); (err == nil) != tt.ok {
			t.Errorf("CheckAuthCacheKey(%q) = %v, want ok %v", tt.key, err, tt.ok)
		}
	}
}

// TestExpandCacheKeySeparates: values cannot shift from one variable to
// the next to collide with another request's key.
func TestExpandCacheKeySeparates(t *testing.T) {
	key := "$http_a$http_b"
	mk := func(a, b string) string {
		req := &fakeFields{fields: [][2]string{{"A", a}, {"B", b}}}
		return expandCacheKey(key, req, &authVars{}, netip.Addr{})
	}
	if mk("ab", "c") == mk("a", "bc") {
		t.Error("keys collide")
	}
	if mk("x", "y") != mk("x", "y") {
		t.Error("key not stable")
	}
}

// fakeFields is a request with only header fields.
type fakeFields struct{ fields [][2]string }

func (f *fakeFields) method() string     { return "GET" }
func (f *fakeFields) rawQuery() string   { return "" }
func (f *fakeFields) requestURI() string { return "/" }
func (f *fakeFields) headerValue(name string) (string, bool) {
	for _, kv := range f.fields {
		if strings.EqualFold(kv[0], name) {
			return kv[1], true
		}
	}
	return "", false
}
func (f *fakeFields) eachField(fn func(name, value string)) {
	for _, kv := range f.fields {
		fn(kv[0], kv[1])
	}
}

func FuzzCheckAuthCacheKey(f *testing.F) {
	for _, s := range []string{"$remote_user$http_authorization", "${cookie_a}", "$", "${", "$$x", "$http_"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if CheckAuthCacheKey(key) != nil {
			return
		}
		_ = expandCacheKey(key, &fakeFields{}, &authVars{scheme: "http", host: "h", uri: "/"}, netip.Addr{})
	})
}

// TestGatewaySessionPersistence: a Gateway rule's cookie affinity, through
// every client side and upstream kind, keeps the rule's own response
// filter.
func TestGatewaySessionPersistence(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			a, b := startGatewayEcho(t, "a"), startGatewayEcho(t, "b")
			ups := []Upstream{{Name: "ab", Protocol: pc.protocol, Endpoints: ep(a, b)}}
			p := gwTestProxy(t, pc, Options{}, ups, HTTPRouteRule{
				Matches:  []HTTPMatch{{PathType: PathPrefix, Path: "/shop"}},
				Backends: []WeightedBackend{{Upstream: "ab", Weight: 1}},
				Filters:  Filters{ResponseHeaders: &HeaderEdit{Set: []Field{{"X-Resp-Rule", "r"}}}},
				Affinity: &CookieAffinity{Name: "GW", Key: []byte("k")},
			}, HTTPRouteRule{
				Matches:  []HTTPMatch{{PathType: PathRegex, Path: "/re/.*"}},
				Backends: []WeightedBackend{{Upstream: "ab", Weight: 1}},
				Affinity: &CookieAffinity{Name: "RE", Key: []byte("k")},
			})
			if resp, _ := gwDo(t, pc, p, "GET", "/re/x", nil); !strings.Contains(resp.Header.Get("Set-Cookie"), "; Path=/;") {
				t.Errorf("regex rule's cookie %q, want Path=/", resp.Header.Get("Set-Cookie"))
			}
			resp, first := gwDo(t, pc, p, "GET", "/shop/cart", nil)
			sc := resp.Header.Get("Set-Cookie")
			if !strings.HasPrefix(sc, "GW=") || !strings.Contains(sc, "Path=/shop") {
				t.Fatalf("Set-Cookie %q", sc)
			}
			if resp.Header.Get("X-Resp-Rule") != "r" {
				t.Error("the rule's response filter was lost")
			}
			cookie, _, _ := strings.Cut(sc, ";")
			for i := range 8 {
				resp, e := gwDo(t, pc, p, "GET", "/shop/cart", map[string]string{"Cookie": cookie})
				if e.Backend != first.Backend {
					t.Fatalf("request %d went to %q, want %q", i, e.Backend, first.Backend)
				}
				if resp.Header.Get("X-Resp-Rule") != "r" || resp.Header.Get("Set-Cookie") != "" {
					t.Errorf("request %d: filter %q, Set-Cookie %q", i, resp.Header.Get("X-Resp-Rule"), resp.Header.Get("Set-Cookie"))
				}
			}
		})
	}
}

// TestRateLimitAcrossUpdates: counters outlive a configuration update
// with the same limits (the controller sends new Access values on every
// sync), while a new exempt list or new limits apply at once.
func TestRateLimitAcrossUpdates(t *testing.T) {
	b := startBackend(t, "a", nil)
	cfgWith := func(rl RateLimit) Config { return accessConfig(&Access{RateLimit: &rl}, b) }
	p := startProxy(t, Options{}, cfgWith(RateLimit{RPM: 1, BurstMultiplier: 1}))
	c := httpClient()
	get := func() int {
		resp, _ := do(t, c, "GET", "http://"+p.httpAddr+"/", "a.example", nil)
		return resp.StatusCode
	}
	for i, want := range []int{200, 200, 503} {
		if got := get(); got != want {
			t.Fatalf("request %d: %d, want %d", i, got, want)
		}
	}
	steps := []struct {
		name string
		rl   RateLimit
		want int
	}{
		{"same limits: still limited", RateLimit{RPM: 1, BurstMultiplier: 1}, 503},
		{"client exempted", RateLimit{RPM: 1, BurstMultiplier: 1, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, 200},
		{"exemption gone: the counters are still there", RateLimit{RPM: 1, BurstMultiplier: 1}, 503},
		{"new limits start afresh", RateLimit{RPM: 100}, 200},
	}
	for _, s := range steps {
		if errs := p.Update(cfgWith(s.rl)); len(errs) > 0 {
			t.Fatal(errs)
		}
		if got := get(); got != s.want {
			t.Errorf("%s: %d, want %d", s.name, got, s.want)
		}
	}
}

// TestRateLimitDefaultBackendShared: an Ingress's rules and its
// defaultBackend share one Access, hence one set of counters.
func TestRateLimitDefaultBackendShared(t *testing.T) {
	b := startBackend(t, "a", nil)
	cfg := accessConfig(&Access{RateLimit: &RateLimit{RPM: 1, BurstMultiplier: 1}}, b)
	cfg.DefaultUpstream, cfg.DefaultOptions = "ns/a:80", cfg.Routes[0].Options
	p := startProxy(t, Options{}, cfg)
	c := httpClient()
	for i, host := range []string{"a.example", "other.example", "a.example"} {
		resp, _ := do(t, c, "GET", "http://"+p.httpAddr+"/", host, nil)
		if want := map[bool]int{true: 503, false: 200}[i == 2]; resp.StatusCode != want {
			t.Errorf("request %d (%s): %d, want %d", i, host, resp.StatusCode, want)
		}
	}
}

// TestExternalAuthKeepsRuleEdits checks that the auth answer's fields are
// added to the request changes of the route's rule (an Ingress's
// x-forwarded-prefix, a RequestHeaderModifier) instead of replacing them:
// the answer wins for the fields it names.
func TestExternalAuthKeepsRuleEdits(t *testing.T) {
	auth := startBackend(t, "auth", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u := r.Header.Get("X-Answer-User"); u != "" {
			w.Header().Set("X-Auth-User", u)
		}
	}))
	var seen atomic.Pointer[http.Header]
	b := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		seen.Store(&h)
	}))
	edit := &HeaderEdit{Set: []Field{{"X-Forwarded-Prefix", "/p"}, {"X-Auth-User", "rule"}}, Add: []Field{{"X-Rule-Add", "1"}}}
	cfg := Config{
		Routes: []Route{{Host: "a.example", Path: "/", Ingress: "ns/ing",
			Rules: []HTTPRouteRule{{Backends: []WeightedBackend{{Upstream: "ns/a:80", Weight: 1}},
				Filters: Filters{RequestHeaders: edit}}},
			Options: RouteOptions{Access: &Access{ExternalAuth: &ExternalAuth{
				URL: "http://" + auth.addr.String() + "/check", ResponseHeaders: []string{"X-Auth-User"}}}}}},
		Upstreams: []Upstream{{Name: "ns/a:80", Endpoints: ep(b)}},
	}
	p := startProxy(t, Options{}, cfg)
	tests := []struct {
		name       string
		answerUser string
		want       map[string]string
	}{
		{"answer field wins, rule fields kept", "alice",
			map[string]string{"X-Forwarded-Prefix": "/p", "X-Rule-Add": "1", "X-Auth-User": "alice"}},
		{"field missing from the answer removed, rule fields kept", "",
			map[string]string{"X-Forwarded-Prefix": "/p", "X-Rule-Add": "1", "X-Auth-User": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := do(t, httpClient(), "GET", "http://"+p.httpAddr+"/x", "a.example",
				map[string]string{"X-Answer-User": tt.answerUser})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			h := *seen.Load()
			for k, want := range tt.want {
				if got := strings.Join(h.Values(k), ","); got != want {
					t.Errorf("upstream %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}
