package l7proxy

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
)

func TestForwardedHeaders(t *testing.T) {
	echo := startBackend(t, "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := map[string]string{}
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-Ip", "Forwarded"} {
			out[h] = r.Header.Get(h)
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	cfg := Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(echo)}},
	}
	spoofed := map[string]string{
		"X-Forwarded-For":   "203.0.113.7, 10.0.0.1",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  "evil.example",
		"X-Forwarded-Port":  "8443",
		"X-Real-Ip":         "203.0.113.7",
		"Forwarded":         "for=203.0.113.7",
	}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		send    map[string]string
		want    map[string]string
	}{
		{
			name: "untrusted peer, nothing sent",
			want: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
				"X-Forwarded-Host": "site.example", "X-Real-Ip": "127.0.0.1", "Forwarded": ""},
		},
		{
			name: "untrusted peer, spoofed headers replaced",
			send: spoofed,
			want: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
				"X-Forwarded-Host": "site.example", "X-Real-Ip": "127.0.0.1", "Forwarded": ""},
		},
		{
			name:    "trusted peer, chain extended and kept",
			trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
			send:    spoofed,
			want: map[string]string{"X-Forwarded-For": "203.0.113.7, 10.0.0.1, 127.0.0.1", "X-Forwarded-Proto": "https",
				"X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "8443", "X-Real-Ip": "203.0.113.7",
				"Forwarded": "for=203.0.113.7"},
		},
		{
			name:    "trusted peer, untrusted hop in between",
			trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			send:    map[string]string{"X-Forwarded-For": "203.0.113.7, 10.0.0.1"},
			want: map[string]string{"X-Forwarded-For": "203.0.113.7, 10.0.0.1, 127.0.0.1", "X-Forwarded-Proto": "http",
				"X-Forwarded-Host": "site.example", "X-Real-Ip": "10.0.0.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, Options{TrustedProxies: tt.trusted}, cfg)
			req, _ := http.NewRequest(http.MethodGet, "http://"+p.httpAddr+"/", nil)
			req.Host = "site.example"
			for k, v := range tt.send {
				req.Header.Set(k, v)
			}
			resp, err := httpClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			_, port, _ := splitHostPortString(p.httpAddr)
			if _, set := tt.want["X-Forwarded-Port"]; !set {
				tt.want["X-Forwarded-Port"] = port
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func splitHostPortString(s string) (string, string, bool) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", "", false
	}
	return ap.Addr().String(), strconv.Itoa(int(ap.Port())), true
}

func TestRealClient(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	tests := []struct {
		name  string
		prior []string
		peer  string
		want  string
	}{
		{"single client", []string{"203.0.113.1"}, "10.0.0.2", "203.0.113.1"},
		{"rightmost untrusted wins", []string{"198.51.100.9, 203.0.113.1, 10.1.1.1"}, "10.0.0.2", "203.0.113.1"},
		{"several header lines", []string{"198.51.100.9", "203.0.113.1", "10.1.1.1"}, "10.0.0.2", "203.0.113.1"},
		{"all trusted gives leftmost", []string{"10.9.9.9, 10.1.1.1"}, "10.0.0.2", "10.9.9.9"},
		{"garbage stops the walk", []string{"203.0.113.1, garbage, 10.1.1.1"}, "10.0.0.2", "10.1.1.1"},
		{"ports and brackets", []string{"[2001:db9::1]:443, 10.1.1.1:80"}, "10.0.0.2", "2001:db9::1"},
		{"empty elements skipped", []string{" , 203.0.113.1 ,"}, "10.0.0.2", "203.0.113.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := realClient(tt.prior, tt.peer, trusted); got != tt.want {
				t.Errorf("realClient = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHasDotSegment(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/", false},
		{"/a/b", false},
		{"/.well-known/acme", false},
		{"/a/..b/c.", false},
		{"/a/../b", true},
		{"/a/./b", true},
		{"/a/..", true},
		{"/a/.", true},
		{"/..", true},
	}
	for _, tt := range tests {
		if got := hasDotSegment(tt.path); got != tt.want {
			t.Errorf("hasDotSegment(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestStripPort(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a.example", "a.example"},
		{"a.example:8080", "a.example"},
		{"[2001:db8::1]", "[2001:db8::1]"},
		{"[2001:db8::1]:8080", "[2001:db8::1]"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := stripPort(tt.in); got != tt.want {
			t.Errorf("stripPort(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
