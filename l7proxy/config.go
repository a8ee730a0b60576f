// Package l7proxy is nodegress's HTTP/HTTPS proxy: it routes requests by
// Ingress host and path rules straight to pod endpoints. It knows nothing of
// Kubernetes; the controller translates Ingresses into a Config.
package l7proxy

import (
	"crypto/tls"
	"net/netip"
	"time"
)

// PathType is how a route's path matches, as the Ingress API defines it.
// ImplementationSpecific is translated to Prefix by the controller.
type PathType uint8

// Path types.
const (
	// PathPrefix matches element by element on '/'-separated path parts:
	// "/foo" matches "/foo", "/foo/" and "/foo/bar", not "/foobar".
	PathPrefix PathType = iota
	// PathExact matches the URL path exactly, case-sensitively.
	PathExact
	// PathRegex (declared with the Gateway API's matches in gateway.go)
	// is, on a Route, an RE2 expression matched case-insensitively
	// against the start of the path, as ingress-nginx's `location ~*
	// "^path"`: see RouteTable.
)

// Config is the complete desired state of the proxy. The proxy compiles it
// into an immutable route table and swaps it in atomically.
type Config struct {
	// Routes in precedence order: when two claim the same (host, path,
	// path type), the earlier one wins. The controller lists them by
	// Ingress creationTimestamp, then namespace/name (oldest wins).
	Routes []Route
	// DefaultUpstream names the upstream serving requests no route
	// matches (empty: 404).
	DefaultUpstream string
	// DefaultOptions apply to requests served by DefaultUpstream.
	DefaultOptions RouteOptions
	// Upstreams by Upstream.Name.
	Upstreams []Upstream
	// Certificates served by SNI. Requests for unknown names get the
	// proxy's self-signed default certificate.
	Certificates []Certificate
	// Listeners are the Gateway API listeners; connections to their
	// frontends are routed by their HTTPRoutes (gateway.go) instead of
	// Routes.
	Listeners []Listener
}

// Route sends requests for Host and Path to an upstream.
type Route struct {
	// Host is an exact host name, a wildcard "*.example.com" matching
	// exactly one extra leading label, or "" for every host.
	Host     string
	Path     string
	PathType PathType
	// Upstream names an entry of Config.Upstreams.
	Upstream string
	// Ingress is "namespace/name" of the Ingress the route comes from,
	// for logs and metrics.
	Ingress string
	Options RouteOptions
	// Rules, when set, serve the route as a Gateway rule is served (its
	// filters, weighted backends, timeouts): the first rule whose
	// matches hold takes the request. Their matches test headers,
	// cookies and PathExact paths only; the route itself decided the
	// host and path. The controller uses them for Ingress annotations
	// (rewrites, redirects, CORS, canaries); a route without Rules costs
	// nothing more than before. Upstream may then be empty (a route that
	// only redirects).
	Rules []HTTPRouteRule
}

// RouteOptions are per-Ingress settings (from its annotations).
type RouteOptions struct {
	// SSLRedirect answers plain-HTTP requests with a 308 to https.
	SSLRedirect bool
	// MaxBodyBytes limits request bodies; 0 means the proxy default,
	// negative means unlimited.
	MaxBodyBytes int64
	// Access is the route's access control (source ranges, rate limits,
	// authentication, sticky sessions, error pages; access.go); nil,
	// as for most routes, costs nothing per request.
	Access *Access
}

// UpstreamProtocol is how the proxy talks to an upstream's endpoints.
type UpstreamProtocol uint8

// Upstream protocols.
const (
	ProtocolHTTP  UpstreamProtocol = iota // HTTP/1.1, cleartext
	ProtocolH2C                           // HTTP/2 over cleartext (gRPC)
	ProtocolHTTPS                         // HTTP/1.1 or HTTP/2 over TLS
)

// Balance is how requests are spread over an upstream's endpoints.
type Balance uint8

// Balancing policies.
const (
	RoundRobin   Balance = iota
	LeastRequest         // power of two random choices by in-flight requests
)

// Upstream is one service port and its endpoints across the cluster.
type Upstream struct {
	// Name identifies the upstream, e.g. "default/web:http"; routes refer
	// to it. Connection pools live as long as the name does.
	Name      string
	Namespace string
	Service   string
	Port      string // the Service port's name or number, for error pages
	Protocol  UpstreamProtocol
	Balance   Balance
	// Endpoints are the ready (and terminating) pod addresses. No ready
	// endpoint: requests get 503.
	Endpoints []Endpoint
	// Zero durations mean the proxy's defaults.
	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	IdleTimeout    time.Duration
	// SendTimeout, when positive, bounds every write to an endpoint: a
	// request whose write makes no progress for that long fails (nginx's
	// proxy_send_timeout). Zero: no bound besides the read timeout.
	SendTimeout time.Duration
	// TLS verifies a ProtocolHTTPS upstream's certificate (nil: the
	// connection is encrypted but not verified).
	TLS *UpstreamTLS
	// ProxyProtocol (1 or 2; 0: off) starts every connection to the
	// upstream with a PROXY header carrying the client's address. Such a
	// connection belongs to its client: it is never reused for another.
	// HTTP/1.1 upstreams only.
	ProxyProtocol uint8
}

// Endpoint is one pod address of an upstream.
type Endpoint struct {
	Addr netip.AddrPort
	// Terminating endpoints finish what they have and get no new requests.
	Terminating bool
	// Pod ("namespace/name") and Node name the endpoint's pod and the
	// node it runs on, for request traces; empty when unknown.
	Pod, Node string
}

// Certificate is a TLS certificate and the host names it is served for.
type Certificate struct {
	// Hosts are exact or "*." wildcard names from the Ingress's tls
	// section; empty means the names in the certificate itself.
	Hosts []string
	Cert  *tls.Certificate
	// Source is "namespace/secret", for logs.
	Source string
}
