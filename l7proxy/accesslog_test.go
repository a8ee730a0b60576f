package l7proxy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAppendJSONString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{`q"uote\`, `q"uote\`},
		{"ctl\x00\x1f\n\r\t", "ctl\x00\x1f\n\r\t"},
		{"utf8 é ✓", "utf8 é ✓"},
		{"bad \xff utf8", "bad \ufffd utf8"},
		{"sep \u2028\u2029", "sep \u2028\u2029"},
		{"", ""},
	}
	for _, tt := range tests {
		b := appendJSONString(nil, tt.in)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q: invalid JSON %s: %v", tt.in, b, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%q: round trip %q, want %q", tt.in, got, tt.want)
		}
		if strings.ContainsAny(string(b), "\n\r\u2028\u2029") {
			t.Errorf("%q: raw line breaks in %s", tt.in, b)
		}
	}
}

func TestLogEntryJSON(t *testing.T) {
	e := logEntry{
		time: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC), client: "10.0.0.1", method: "GET",
		host: "a.example", path: "/x", proto: "HTTP/2.0", status: 502, bytes: 12,
		duration: 1500 * time.Microsecond, upstream: "10.1.0.1:80", ingress: "ns/i", service: "ns/s:http",
		requestID: "0123456789abcdef0123456789abcdef", err: errors.New("connect: refused"),
	}
	line := e.appendJSON(nil)
	if line[len(line)-1] != '\n' {
		t.Fatal("no newline")
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	want := map[string]any{"time": "2026-01-02T03:04:05.006Z", "client": "10.0.0.1", "method": "GET",
		"host": "a.example", "path": "/x", "proto": "HTTP/2.0", "status": 502.0, "bytes": 12.0,
		"duration_ms": 1.5, "upstream": "10.1.0.1:80", "ingress": "ns/i", "service": "ns/s:http",
		"request_id": "0123456789abcdef0123456789abcdef", "error": "connect: refused"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("fields %v", got)
	}
}

func BenchmarkLogEntry(b *testing.B) {
	e := logEntry{time: time.Now(), client: "10.0.0.1", method: "GET", host: "a.example", path: "/x",
		proto: "HTTP/1.1", status: 200, bytes: 20, duration: time.Millisecond, upstream: "10.1.0.1:80",
		ingress: "ns/i", service: "ns/s:http"}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.appendJSON(buf[:0])
	}
}
