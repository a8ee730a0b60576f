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

// Ingress annotations are read under two prefixes with the same names
// and the same meaning: nodegress's own, and ingress-nginx's, so that
// Ingresses written for ingress-nginx keep working. When both carry a
// name, the nodegress.io/ one is used and the other ignored.
const (
	// AnnotationPrefix is nodegress's own prefix.
	AnnotationPrefix = "nodegress.io/"
	// NginxAnnotationPrefix is ingress-nginx's prefix.
	NginxAnnotationPrefix = "nginx.ingress.kubernetes.io/"
)

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

// ingressAnnotations are the parsed annotations of one Ingress. The zero
// value is what an Ingress without annotations gets.
type ingressAnnotations struct {
	SSLRedirect    bool
	Access         accessAnnotations // access control (annotations_access.go)
	Protocol       l7proxy.UpstreamProtocol
	Balance        l7proxy.Balance
	MaxBodyBytes   int64 // 0: proxy default, -1: unlimited
	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	IdleTimeout    time.Duration
	// SendTimeout bounds each write to a backend (0: none).
	SendTimeout time.Duration
	// TLS verifies an HTTPS upstream, as the BackendTLSPolicy named by
	// TLSPolicy (namespace/name) says.
	TLS       *l7proxy.UpstreamTLS
	TLSPolicy string
	// ProxyProtocol is the PROXY header version sent upstream (0: none).
	ProxyProtocol uint8
	// Routing holds the rewrite, redirect, CORS, canary and upstream
	// TLS annotations (annotations_routing.go).
	Routing routingAnnotations
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
	if errors.Is(e.Err, errAnnotationRefused) {
		return fmt.Sprintf("annotation %s: %v", e.Annotation, e.Err)
	}
	return fmt.Sprintf("annotation %s: invalid value %q: %v", e.Annotation, e.Value, e.Err)
}

func (e *AnnotationError) Unwrap() error { return e.Err }

// errAnnotationRefused marks an annotation nodegress refuses whatever its
// value: the Ingress is not served, since dropping what it asks for (nginx
// configuration, a security check) could expose what it protects.
var errAnnotationRefused = errors.New("refused")

// annotationParser parses one annotation's value into a.
type annotationParser func(v string, a *ingressAnnotations) error

// annotationParsers is the allow-list: one typed parser per annotation
// name, without prefix. Files that own a group of annotations add theirs
// with registerAnnotations from an init function.
var annotationParsers = map[string]annotationParser{}

// nodegressOnlyAnnotations are the names ingress-nginx does not have (or
// gives another meaning): they are read under nodegress.io/ only.
var nodegressOnlyAnnotations = map[string]bool{}

// duplicateAnnotations are names registered twice, a programming error
// the tests catch (the later parser replaced the earlier).
var duplicateAnnotations []string

// registerAnnotations adds parsers to the allow-list.
func registerAnnotations(ps map[string]annotationParser) {
	for name, p := range ps {
		if _, dup := annotationParsers[name]; dup {
			duplicateAnnotations = append(duplicateAnnotations, name)
		}
		annotationParsers[name] = p
	}
}

func init() {
	registerAnnotations(map[string]annotationParser{
		"ssl-redirect": func(v string, a *ingressAnnotations) error {
			b, err := parseBool(v)
			a.SSLRedirect = b
			return err
		},
		"backend-protocol": func(v string, a *ingressAnnotations) error {
			switch strings.ToUpper(strings.TrimSpace(v)) {
			case "HTTP":
				a.Protocol = l7proxy.ProtocolHTTP
			case "HTTPS", "GRPCS":
				a.Protocol = l7proxy.ProtocolHTTPS
			case "H2C", "GRPC":
				a.Protocol = l7proxy.ProtocolH2C
			case "AJP", "FCGI":
				return errors.New("AJP and FastCGI backends are not supported; want HTTP, HTTPS, H2C, GRPC or GRPCS")
			default:
				return errors.New("want HTTP, HTTPS, H2C, GRPC or GRPCS")
			}
			return nil
		},
		"load-balance": func(v string, a *ingressAnnotations) error {
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
		"proxy-body-size": func(v string, a *ingressAnnotations) error {
			n, err := parseByteSize(v)
			a.MaxBodyBytes = n
			return err
		},
		"proxy-connect-timeout": func(v string, a *ingressAnnotations) (err error) {
			a.ConnectTimeout, err = parseTimeout(v)
			return err
		},
		"proxy-read-timeout": func(v string, a *ingressAnnotations) (err error) {
			a.ReadTimeout, err = parseTimeout(v)
			return err
		},
		"proxy-send-timeout": func(v string, a *ingressAnnotations) (err error) {
			a.SendTimeout, err = parseTimeout(v)
			return err
		},
		"proxy-idle-timeout": func(v string, a *ingressAnnotations) (err error) {
			a.IdleTimeout, err = parseTimeout(v)
			return err
		},
		"proxy-protocol": func(v string, a *ingressAnnotations) error {
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
	})
	// ingress-nginx's load-balance takes ewma and round_robin; its
	// upstream keepalive timeout and PROXY protocol are ConfigMap
	// settings, not annotations.
	for _, n := range []string{"load-balance", "proxy-idle-timeout", "proxy-protocol"} {
		nodegressOnlyAnnotations[n] = true
	}
}

// refusedAnnotation says why an annotation name is refused, "" when it is
// not. Snippets are nginx configuration: nodegress runs no nginx, and
// what a snippet does (often access control or headers) cannot be
// guessed, so an Ingress carrying one is not served rather than served
// without it. The other names are access controls nodegress does not
// implement: serving the Ingress without them would open what they close.
// A name with a parser (annotationParsers) is never refused: implementing
// one of these lifts its refusal.
func refusedAnnotation(name string) string {
	switch {
	case strings.HasSuffix(name, "-snippet") || strings.HasSuffix(name, "-snippets"):
		return "snippets are nginx configuration, which nodegress does not run"
	case strings.HasPrefix(name, "auth-tls-"):
		return "client certificate authentication is not supported"
	case strings.HasPrefix(name, "auth-"):
		// The implemented ones have parsers; an ignored authentication
		// setting could leave a route more open than its owner meant.
		return "this authentication setting is not supported"
	case name == "enable-modsecurity" || name == "enable-owasp-core-rules" || strings.HasPrefix(name, "modsecurity-"):
		return "ModSecurity is not supported"
	case name == "satisfy":
		return "combining access checks is not supported"
	}
	return ""
}

// parseAnnotations reads the annotations of an Ingress under both
// prefixes. The first problem is returned as an *AnnotationError: a
// refused annotation (refusedAnnotation) before an invalid value, each in
// name order, so the same object always reports the same one. Annotations
// nodegress does not know under either prefix are returned as full names
// so the caller can warn about them: typos of a known nodegress.io/ name,
// or ingress-nginx features nodegress does not have.
func parseAnnotations(annotations map[string]string) (ingressAnnotations, []string, error) {
	var a ingressAnnotations
	// The key each name is read from: nodegress.io/ wins over nginx.
	from := map[string]string{}
	var unknown, refused []string
	for k := range annotations {
		var name string
		switch {
		case strings.HasPrefix(k, AnnotationPrefix):
			name = k[len(AnnotationPrefix):]
		case strings.HasPrefix(k, NginxAnnotationPrefix):
			name = k[len(NginxAnnotationPrefix):]
			if nodegressOnlyAnnotations[name] {
				unknown = append(unknown, k)
				continue
			}
		default:
			continue
		}
		if _, ok := annotationParsers[name]; !ok {
			if refusedAnnotation(name) != "" {
				refused = append(refused, k)
			} else {
				unknown = append(unknown, k)
			}
			continue
		}
		if prev, ok := from[name]; !ok || strings.HasPrefix(prev, NginxAnnotationPrefix) {
			from[name] = k
		}
	}
	slices.Sort(unknown)
	if len(refused) > 0 {
		slices.Sort(refused)
		k := refused[0]
		name := k[strings.IndexByte(k, '/')+1:]
		return ingressAnnotations{}, unknown, &AnnotationError{Annotation: k, Value: annotations[k],
			Err: fmt.Errorf("%w: %s", errAnnotationRefused, refusedAnnotation(name))}
	}
	names := make([]string, 0, len(from))
	for name := range from {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		k := from[name]
		v := annotations[k]
		if err := annotationParsers[name](v, &a); err != nil {
			return ingressAnnotations{}, unknown, &AnnotationError{Annotation: k, Value: v, Err: err}
		}
	}
	// A PROXY header goes on a connection of its own per client: the
	// multiplexed (h2c) and TLS upstream connections cannot carry one.
	if a.ProxyProtocol != 0 && a.Protocol != l7proxy.ProtocolHTTP {
		return ingressAnnotations{}, unknown, &AnnotationError{Annotation: AnnotationProxyProtocol,
			Value: annotations[AnnotationProxyProtocol], Err: errors.New("needs backend-protocol HTTP")}
	}
	if err := a.Routing.check(from, annotations); err != nil {
		return ingressAnnotations{}, unknown, err
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
