package healthcheck

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ProxyChecker tells whether the proxy is healthy; Proxy is one.
type ProxyChecker interface {
	Healthy() bool
}

// ListenError is a healthCheckNodePort that could not be opened, usually
// because something else on the node listens on it. The next SyncServices
// tries again.
type ListenError struct {
	Service types.NamespacedName
	Port    uint16
	Err     error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("health check of service %s on port %d: %v", e.Service, e.Port, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// ServiceServer serves one HTTP server per Service with a
// healthCheckNodePort: 200 while the Service has local endpoints and the
// proxy is healthy, 503 otherwise, so a load balancer sends a Service's
// traffic only to the nodes that can serve it locally.
type ServiceServer struct {
	log   *slog.Logger
	proxy ProxyChecker
	// host is the address every port is opened on: all of them by
	// default, as kube-proxy does without --nodeport-addresses.
	host string
	// listen opens a port; tests replace it.
	listen func(addr string) (net.Listener, error)

	mu       sync.RWMutex
	services map[types.NamespacedName]*serviceListener
	// failing remembers the ports that could not be opened, so that a
	// port that stays taken is logged once, not at every sync.
	failing map[types.NamespacedName]string
	closed  bool
	wg      sync.WaitGroup
}

type serviceListener struct {
	port uint16
	ln   net.Listener
	srv  *http.Server
	// endpoints is the number of local endpoints, under ServiceServer.mu.
	endpoints int
}

// close closes the port before it returns, so that another Service can
// open it in the same sync.
func (l *serviceListener) close() {
	_ = l.srv.Close()
	_ = l.ln.Close()
}

// ServiceConfig configures a ServiceServer.
type ServiceConfig struct {
	// Host is the address the ports are opened on; empty means every
	// address of the node.
	Host string
	// Logger receives the servers' logs; nil means slog.Default().
	Logger *slog.Logger
}

// NewServiceServer returns a ServiceServer reporting proxy's health in
// every answer. It serves nothing until SyncServices.
func NewServiceServer(proxy ProxyChecker, cfg ServiceConfig) *ServiceServer {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &ServiceServer{
		log:   log,
		proxy: proxy,
		host:  cfg.Host,
		listen: func(addr string) (net.Listener, error) {
			return net.Listen("tcp", addr)
		},
		services: make(map[types.NamespacedName]*serviceListener),
		failing:  make(map[types.NamespacedName]string),
	}
}

// SyncServices makes the served Services exactly services, each on its
// healthCheckNodePort: ports of Services gone (or moved) are closed, new
// ones opened, the others left alone with their endpoint counts. A port
// that cannot be opened is logged and returned as a *ListenError (joined
// with the others); the Service is left out and tried again at the next
// call.
func (s *ServiceServer) SyncServices(services map[types.NamespacedName]uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("service health server is closed")
	}
	for name, l := range s.services {
		if port, ok := services[name]; !ok || port != l.port {
			s.log.Debug("closing health check port", "svc", name, "port", l.port)
			l.close()
			delete(s.services, name)
		}
	}
	for name := range s.failing {
		if _, ok := services[name]; !ok {
			delete(s.failing, name)
		}
	}
	var errs []error
	for name, port := range services {
		if s.services[name] != nil {
			continue
		}
		addr := net.JoinHostPort(s.host, strconv.Itoa(int(port)))
		ln, err := s.listen(addr)
		if err != nil {
			lerr := &ListenError{Service: name, Port: port, Err: err}
			errs = append(errs, lerr)
			if msg := lerr.Error(); s.failing[name] != msg {
				s.failing[name] = msg
				s.log.Error("open health check port", "svc", name, "port", port, "err", err)
			} else {
				s.log.Debug("open health check port, still failing", "svc", name, "port", port, "err", err)
			}
			continue
		}
		if _, ok := s.failing[name]; ok {
			delete(s.failing, name)
			s.log.Info("health check port open after failing", "svc", name, "port", port)
		} else {
			s.log.Debug("opened health check port", "svc", name, "port", port, "addr", ln.Addr())
		}
		l := &serviceListener{
			port: port,
			ln:   ln,
			srv:  &http.Server{Handler: &serviceHandler{name: name, srv: s}, ReadHeaderTimeout: readHeaderTimeout},
		}
		s.services[name] = l
		s.wg.Go(func() {
			if err := l.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("health check server stopped", "svc", name, "port", port, "err", err)
			}
		})
	}
	return errors.Join(errs...)
}

// SyncEndpoints sets the number of local endpoints of every served
// Service; Services missing from endpoints have none. Counts of Services
// not served are ignored.
func (s *ServiceServer) SyncEndpoints(endpoints map[types.NamespacedName]int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, l := range s.services {
		l.endpoints = endpoints[name]
	}
	return nil
}

// Close closes every port and waits for the servers to stop.
func (s *ServiceServer) Close() {
	s.mu.Lock()
	s.closed = true
	for name, l := range s.services {
		l.close()
		delete(s.services, name)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// serviceHandler answers the probes of one Service, whatever the path or
// method, as kube-proxy does.
type serviceHandler struct {
	name types.NamespacedName
	srv  *ServiceServer
}

func (h *serviceHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h.srv.mu.RLock()
	l := h.srv.services[h.name]
	count := 0
	if l != nil {
		count = l.endpoints
	}
	h.srv.mu.RUnlock()
	if l == nil {
		// A probe that raced with the port's closing. kube-proxy sends
		// an empty 200 here; nothing better is known, so do the same.
		return
	}
	healthy := h.srv.proxy.Healthy()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Load balancers that weigh nodes (GCP's WEIGHTED_MAGLEV) read it.
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
	if count != 0 && healthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprint(w, serviceBody(h.name, count, healthy))
}

// serviceBody is kube-proxy's indented JSON, without a final newline.
func serviceBody(name types.NamespacedName, localEndpoints int, proxyHealthy bool) string {
	return fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
		name.Namespace, name.Name, localEndpoints, proxyHealthy)
}
