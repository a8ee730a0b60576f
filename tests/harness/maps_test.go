package harness

import (
	"slices"
	"testing"
)

// mapsSample is `nodegress maps` of a node serving a LoadBalancer IP, a
// NodePort without backends and two L7 frontends.
const mapsSample = `FRONTEND          PROTO  SERVICE ID  BACKENDS  KIND
10.96.20.1:80     TCP    4           [5 6]     L4
10.100.0.1:80     TCP    1           []        L7
10.100.0.1:443    TCP    2           []        L7
10.100.0.1:30080  TCP    3           [6]       L4
10.100.0.1:30090  UDP    7           []        L4

BACKEND ID  ADDRESS           LOCAL  TERMINATING
5           10.244.1.10:8080  true   false
6           10.244.2.11:8080  false  false

conntrack entries: 22   reverse nat entries: 22   snat ports: 61000-65535   tracing: true

REASON            PACKETS  BYTES
pass_not_ipv4     2        84
fwd_local         111      10042
`

func TestParseMaps(t *testing.T) {
	m, err := ParseMaps(mapsSample)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		frontend string
		want     []string
		present  bool
		l7       bool
	}{
		{"10.96.20.1:80/TCP", []string{"10.244.1.10:8080", "10.244.2.11:8080"}, true, false},
		{"10.100.0.1:80/TCP", []string{}, true, true},
		{"10.100.0.1:30080/TCP", []string{"10.244.2.11:8080"}, true, false},
		{"10.100.0.1:30090/UDP", []string{}, true, false},
		{"10.100.0.1:30090/TCP", nil, false, false},
	}
	for _, tt := range tests {
		got, ok := m.Backends(tt.frontend)
		if ok != tt.present || !slices.Equal(got, tt.want) {
			t.Errorf("Backends(%s) = %v, %t; want %v, %t", tt.frontend, got, ok, tt.want, tt.present)
		}
		if m.L7[tt.frontend] != tt.l7 {
			t.Errorf("L7[%s] = %t, want %t", tt.frontend, m.L7[tt.frontend], tt.l7)
		}
	}
}

func TestParseMapsErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"unknown backend id", "FRONTEND PROTO SERVICE ID BACKENDS KIND\n10.0.0.1:80 TCP 1 [9] L4\n\nBACKEND ID ADDRESS LOCAL TERMINATING\n1 10.244.1.10:80 true false\n"},
		{"no backend list", "FRONTEND PROTO SERVICE ID BACKENDS KIND\n10.0.0.1:80 TCP 1 L4\n"},
		{"bad id", "FRONTEND PROTO SERVICE ID BACKENDS KIND\n10.0.0.1:80 TCP 1 [x] L4\n"},
	}
	for _, tt := range tests {
		if _, err := ParseMaps(tt.in); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}
