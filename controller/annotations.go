package controller

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodegress/nodegress/l7proxy"
)

// AnnotationPrefix is the prefix of the Ingress annotations nodegress reads.
const AnnotationPrefix = "nodegress.io/"

// Ingress annotations understood by nodegress. Each value is parsed into a
// typed field; nothing from an annotation is ever rendered into a
// configuration language, so a value cannot inject anything.
const (
	// AnnotationSSLRedirect "true" answers plain-HTTP requests with a 308
	// redirect to https.
	AnnotationSSLRedirect = AnnotationPrefix + "ssl-redirect"
	// AnnotationBackendProtocol is how the proxy talks to the Ingress's
	// backends: HTTP (default), HTTPS, H2C, GRPC (HTTP/2 cleartext, same as
	// H2C) or GRPCS (HTTP/2 over TLS, same as HTTPS); case-insensitive.
	AnnotationBackendProtocol = AnnotationPrefix + "backend-protocol"
	// AnnotationLoadBalance is round_robin (default) or least_request.
	AnnotationLoadBalance = AnnotationPrefix + "load-balance"
	// AnnotationProxyBodySize limits request bodies, nginx style: bytes,
	// or a number with a k, m or g suffix; "0" means unlimited.
	AnnotationProxyBodySize = AnnotationPrefix + "proxy-body-size"
	// AnnotationProxyConnectTimeout, AnnotationProxyReadTimeout and
	// AnnotationProxyIdleTimeout are Go durations ("5s", "1m30s") or whole
	// seconds ("60").
	AnnotationProxyConnectTimeout = AnnotationPrefix + "proxy-connect-timeout"
	AnnotationProxyReadTimeout    = AnnotationPrefix + "proxy-read-timeout"
	AnnotationProxyIdleTimeout    = AnnotationPrefix + "proxy-idle-timeout"
	// AnnotationProxyProtocol "v1" or "v2" starts every connection to
	// the backends with a PROXY protocol header carrying the client's
	// address; such connections are not shared between clients. HTTP
	// backends only (backend-protocol HTTP).
	AnnotationProxyProtocol = AnnotationPrefix + "proxy-protocol"
)

// ingressAnnotations are the parsed nodegress annotations of one Ingress.
// The zero value is what an Ingress without annotations gets.
type ingressAnnotations struct {
	SSLRedirect    bool
	Access         accessAnnotations // access control (annotations_access.go)
	Protocol       l7proxy.UpstreamProtocol
	Balance        l7proxy.Balance
	MaxBodyBytes   int64 // 0: proxy default, -1: unlimited
	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	IdleTimeout    time.Duration
	// TLS verifies an HTTPS upstream, as the BackendTLSPolicy named by
	// TLSPolicy (namespace/name) says.
	TLS       *l7proxy.UpstreamTLS
	TLSPolicy string
	// ProxyProtocol is the PROXY header version sent upstream (0: none).
	ProxyProtocol uint8
}

// AnnotationError is an annotation value nodegress cannot use. It disables
// the whole Ingress: serving it without the setting could be worse than not
// serving it (a body limit or a redirect silently missing).
type AnnotationError struct {
	Annotation string
	Value      string
	Err        error
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s: invalid value %q: %v", e.Annotation, e.Value, e.Err)
}

func (e *AnnotationError) Unwrap() error { return e.Err }

// annotationParsers is the allow-list: one typed parser per annotation.
var annotationParsers = map[string]func(string, *ingressAnnotations) error{
	AnnotationSSLRedirect: func(v string, a *ingressAnnotations) error {
		b, err := parseBool(v)
		a.SSLRedirect = b
		return err
	},
	AnnotationBackendProtocol: func(v string, a *ingressAnnotations) error {
		switch strings.ToUpper(strings.TrimSpace(v)) {
		case "HTTP":
			a.Protocol = l7proxy.ProtocolHTTP
		case "HTTPS", "GRPCS":
			a.Protocol = l7proxy.ProtocolHTTPS
		case "H2C", "GRPC":
			a.Protocol = l7proxy.ProtocolH2C
		default:
			return errors.New("want HTTP, HTTPS, H2C, GRPC or GRPCS")
		}
		return nil
	},
	AnnotationLoadBalance: func(v string, a *ingressAnnotations) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "round_robin":
			a.Balance = l7proxy.RoundRobin
		case "least_request":
			a.Balance = l7proxy.LeastRequest
		default:
			return errors.New("want round_robin or least_request")
		}
		return nil
	},
	AnnotationProxyBodySize: func(v string, a *ingressAnnotations) error {
		n, err := parseByteSize(v)
		a.MaxBodyBytes = n
		return err
	},
	AnnotationProxyConnectTimeout: func(v string, a *ingressAnnotations) (err error) {
		a.ConnectTimeout, err = parseTimeout(v)
		return err
	},
	AnnotationProxyReadTimeout: func(v string, a *ingressAnnotations) (err error) {
		a.ReadTimeout, err = parseTimeout(v)
		return err
	},
	AnnotationProxyIdleTimeout: func(v string, a *ingressAnnotations) (err error) {
		a.IdleTimeout, err = parseTimeout(v)
		return err
	},
	AnnotationProxyProtocol: func(v string, a *ingressAnnotations) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "v1":
			a.ProxyProtocol = 1
		case "v2":
			a.ProxyProtocol = 2
		default:
			return errors.New("want v1 or v2")
		}
		return nil
	},
}

// parseAnnotations reads the nodegress annotations of an Ingress. The
// first invalid value is returned as an *AnnotationError (annotations are
// checked in name order, so the same object always reports the same one).
// Unknown annotations under the nodegress prefix are returned as names so
// the caller can warn about them: most likely typos of a known one.
func parseAnnotations(annotations map[string]string) (ingressAnnotations, []string, error) {
	var a ingressAnnotations
	var names []string
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var unknown []string
	for _, k := range names {
		parse, ok := annotationParsers[k]
		if !ok {
			unknown = append(unknown, k)
			continue
		}
		v := annotations[k]
		if err := parse(v, &a); err != nil {
			return ingressAnnotations{}, unknown, &AnnotationError{Annotation: k, Value: v, Err: err}
		}
	}
	// A PROXY header goes on a connection of its own per client: the
	// multiplexed (h2c) and TLS upstream connections cannot carry one.
	if a.ProxyProtocol != 0 && a.Protocol != l7proxy.ProtocolHTTP {
		return ingressAnnotations{}, unknown, &AnnotationError{Annotation: AnnotationProxyProtocol,
			Value: annotations[AnnotationProxyProtocol], Err: errors.New("needs backend-protocol HTTP")}
	}
	return a, unknown, nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errors.New("want true or false")
}

// parseByteSize reads an nginx-style size: "1048576", "512k", "8m", "1g"
// (suffixes case-insensitive, powers of 1024). "0" means unlimited and is
// returned as -1, because 0 in l7proxy.RouteOptions means the default.
func parseByteSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return 0, errors.New("empty size")
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		mult = 1 << 10
	case 'm', 'M':
		mult = 1 << 20
	case 'g', 'G':
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	// Digits only: no sign, no spaces, no fractions, as nginx.
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("want bytes or a number with a k, m or g suffix")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, errors.New("size too large")
	}
	if n == 0 {
		return -1, nil
	}
	return n * mult, nil
}

// parseTimeout reads a positive Go duration or a number of whole seconds
// (the form ingress-nginx users write).
func parseTimeout(v string) (time.Duration, error) {
	s := strings.TrimSpace(v)
	if s != "" && strings.TrimLeft(s, "0123456789") == "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > int64(math.MaxInt64/time.Second) {
			return 0, errors.New("too large")
		}
		if n == 0 {
			return 0, errors.New("must be positive")
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New(`want a duration like "5s" or a number of seconds`)
	}
	if d <= 0 {
		return 0, errors.New("must be positive")
	}
	return d, nil
}
