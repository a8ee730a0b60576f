package explain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/nodegress/nodegress/l7proxy"
)

// Version is the protocol version this package speaks.
const Version = 1

// DefaultSocket is where the agent answers explain requests unless told
// otherwise: next to the default trace socket.
const DefaultSocket = "/run/nodegress/explain.sock"

// DefaultClient is the client address assumed without --from: an address
// outside every private range (TEST-NET-3), as an Internet client's.
var DefaultClient = netip.MustParseAddr("203.0.113.7")

// maxRequest bounds a request line.
const maxRequest = 16 << 10

// Query is one request.
type Query struct {
	Version int `json:"version"`
	// Target is IP:PORT, namespace/name[:port], HOST/PATH or an http(s)
	// URL.
	Target string `json:"target"`
	// From is the client address; zero: DefaultClient.
	From netip.Addr `json:"from,omitzero"`
	// Proto is "tcp" or "udp"; empty: both for IP:PORT and services,
	// tcp for routes.
	Proto string `json:"proto,omitempty"`
	// Via is the frontend (address:port) an HTTP route is reached
	// through, e.g. a Gateway's address; zero: the Ingress routes.
	Via netip.AddrPort `json:"via,omitzero"`
	// TLS asks about HTTPS requests (SSL redirects, TLS passthrough).
	TLS bool `json:"tls,omitempty"`
}

// Validate checks what the server cannot answer.
func (q Query) Validate() error {
	if q.Version != Version {
		return fmt.Errorf("protocol version %d not supported (this agent speaks %d)", q.Version, Version)
	}
	if strings.TrimSpace(q.Target) == "" {
		return errors.New("no target: want IP:PORT, namespace/name[:port] or HOST/PATH")
	}
	if q.From.IsValid() && !q.From.Is4() {
		return fmt.Errorf("client %s: the datapath serves IPv4 only", q.From)
	}
	switch q.Proto {
	case "", "tcp", "udp":
	default:
		return fmt.Errorf("protocol %q: want tcp or udp", q.Proto)
	}
	return nil
}

// decodeQuery reads a request line strictly.
func decodeQuery(line []byte) (Query, error) {
	var q Query
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return q, fmt.Errorf("bad request: %w", err)
	}
	if dec.More() {
		return q, errors.New("bad request: more than one JSON value")
	}
	return q, q.Validate()
}

// Answer is the server's reply.
type Answer struct {
	Version int        `json:"version"`
	Error   string     `json:"error,omitempty"`
	Target  string     `json:"target,omitempty"`
	From    netip.Addr `json:"from,omitzero"`
	// Frontends are the datapath's answers, one per frontend and
	// protocol the target names.
	Frontends []FrontendAnswer `json:"frontends,omitempty"`
	// Route is the proxy's answer for an HTTP route target.
	Route *RouteAnswer `json:"route,omitempty"`
}

// FrontendAnswer is one frontend as programmed and its verdict.
type FrontendAnswer struct {
	Frontend  string `json:"frontend"`
	Proto     string `json:"proto"`
	Service   string `json:"service"`
	ServiceID uint32 `json:"service_id"`
	// Kind is L4 (forwarded by XDP/tc), L7 (steered to the proxy) or
	// socket (in-cluster clients' connect(), socket-level balancing).
	Kind string `json:"kind"`
	// Settings as the datapath reads them.
	Forwarding   string          `json:"forwarding"` // SNAT or DSR, for remote backends
	Selection    string          `json:"selection"`  // Maglev or hash
	Affinity     string          `json:"affinity,omitempty"`
	NoBackend    string          `json:"no_backend"` // reject or drop (Local traffic policy)
	Restricted   bool            `json:"restricted"`
	SourceRanges []string        `json:"source_ranges,omitempty"`
	Backends     []BackendAnswer `json:"backends"`
	Verdict      Verdict         `json:"verdict"`
	// Drift says where the maps differ from what the agent programmed.
	Drift []string `json:"drift,omitempty"`
}

// BackendAnswer is one backend of a frontend's service.
type BackendAnswer struct {
	ID      uint32 `json:"id"`
	Address string `json:"address"`
	// State is active (new flows may pick it) or draining: it keeps its
	// established flows only (terminating, or left out of new flows by
	// the traffic policy); draining ones come from the agent's record,
	// the maps' slots hold the active ones.
	State string `json:"state"`
	Local bool   `json:"local"`
	// Pod ("namespace/name") and Node are what the Service's
	// EndpointSlices say of the address; empty when they do not.
	Pod  string `json:"pod,omitempty"`
	Node string `json:"node,omitempty"`
}

// Verdict is what happens to a new connection from the client.
type Verdict struct {
	// Action is forward, reject, drop, steer (to the proxy) or pass (to
	// the kernel, untouched).
	Action string `json:"action"`
	// Reason is the datapath's reason name, as `nodegress trace` shows.
	Reason string `json:"reason"`
	Text   string `json:"text"`
	// Counted is the datapath's counter of Reason on this node so far
	// (packets, all frontends); absent when unread.
	Counted *uint64 `json:"counted,omitempty"`
}

// RouteAnswer is the proxy's answer for a request.
type RouteAnswer = l7proxy.RouteAnswer
