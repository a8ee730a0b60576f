package controller

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/l7proxy"

	"k8s.io/apimachinery/pkg/api/meta"
)

// FuzzDecodeFile: any file decodes without a panic; every object decoded
// has a name and a kind, and every document is accounted for (an
// object, an error, or nothing for an empty one).
func FuzzDecodeFile(f *testing.F) {
	for _, s := range []string{
		webService, webService + "---\n" + webSlice, "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\n",
		"kind: Service\n", "---\n---\n", "apiVersion: v1\nkind: List\nitems: [" + "]\n", ": :\n\t- x",
		"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: a}\nspec: {rules: [{}]}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, errs := decodeFile(data)
		for _, o := range objs {
			m, err := meta.Accessor(o.Object)
			if err != nil || m.GetName() == "" || o.Key.Kind == "" || o.Key.Name != m.GetName() {
				t.Fatalf("decoded object %+v (%v) without a consistent name and kind", o.Key, err)
			}
		}
		for _, e := range errs {
			if e.Err == nil || e.Error() == "" {
				t.Fatalf("error without a message: %+v", e)
			}
		}
	})
}

// FuzzParseAnnotations: any annotation values parse without a panic into
// an error naming a known annotation, or into values within range.
func FuzzParseAnnotations(f *testing.F) {
	f.Add("true", "HTTPS", "least_request", "8m", "5s", "60", "v2")
	f.Add("", "", "", "", "", "", "")
	f.Add("yes", "fcgi", "ewma", "99999999999g", "-1s", "1e9", "v3")
	f.Fuzz(func(t *testing.T, redirect, proto, balance, body, connect, read, pp string) {
		in := map[string]string{
			AnnotationSSLRedirect: redirect, AnnotationBackendProtocol: proto, AnnotationLoadBalance: balance,
			AnnotationProxyBodySize: body, AnnotationProxyConnectTimeout: connect, AnnotationProxyReadTimeout: read,
			AnnotationProxyProtocol: pp, AnnotationPrefix + "unknown": redirect,
		}
		a, unknown, err := parseAnnotations(in)
		if err == nil && (len(unknown) != 1 || unknown[0] != AnnotationPrefix+"unknown") {
			t.Fatalf("unknown annotations %v", unknown)
		}
		if err != nil {
			ae, ok := err.(*AnnotationError)
			if !ok || !strings.HasPrefix(ae.Annotation, AnnotationPrefix) || annotationParsers[strings.TrimPrefix(ae.Annotation, AnnotationPrefix)] == nil {
				t.Fatalf("error %v does not name a known annotation", err)
			}
			return
		}
		if a.MaxBodyBytes < -1 || a.ConnectTimeout < 0 || a.ReadTimeout < 0 || a.ProxyProtocol > 2 {
			t.Fatalf("out of range: %+v", a)
		}
	})
}

// FuzzParseRoutingAnnotations: the routing annotations, under either
// prefix, parse without a panic into an error naming an annotation that
// was set, or into values the translation and the proxy accept: the
// rules built from them compile.
func FuzzParseRoutingAnnotations(f *testing.F) {
	f.Add(true, "/$2", "true", "/app", "https://a.example", "308", "v.example", "/p", "true", "https://*.a.example", "GET", "X-A", "true", "10", "X-C", "v", "c", "/api(/|$)(.*)")
	f.Add(false, "$1$9", "", "/", "http://x", "200", "a:1", "\r", "false", "*", "", "*", "1", "-1", "", "", "", "/(")
	f.Add(true, "/$host", "yes", "app", "/x", "301", "$host", "", "on", "a.example", "GE T", "X A", "0", "101", "X C", "", "a=b", "")
	f.Fuzz(func(t *testing.T, nginx bool, rewrite, useRegex, appRoot, redirect, code, vhost, prefix, cors, origin, methods, headers, canary, weight, header, value, cookie, path string) {
		p := AnnotationPrefix
		if nginx {
			p = NginxAnnotationPrefix
		}
		in := map[string]string{
			p + "rewrite-target": rewrite, p + "use-regex": useRegex, p + "app-root": appRoot,
			p + "permanent-redirect": redirect, p + "permanent-redirect-code": code, p + "upstream-vhost": vhost,
			p + "x-forwarded-prefix": prefix, p + "enable-cors": cors, p + "cors-allow-origin": origin,
			p + "cors-allow-methods": methods, p + "cors-allow-headers": headers, p + "canary": canary,
			p + "canary-weight": weight, p + "canary-by-header": header, p + "canary-by-header-value": value,
			p + "canary-by-cookie": cookie,
		}
		a, unknown, err := parseAnnotations(in)
		if len(unknown) != 0 {
			t.Fatalf("unknown annotations %v", unknown)
		}
		if err != nil {
			ae, ok := err.(*AnnotationError)
			if !ok || ae.Error() == "" {
				t.Fatalf("error %v is not an *AnnotationError", err)
			}
			if _, set := in[ae.Annotation]; !set {
				t.Fatalf("error %v names an annotation that was not set", err)
			}
			return
		}
		r := &a.Routing
		if r.Canary.Weight < 0 || r.Canary.WeightTotal < 0 {
			t.Fatalf("out of range: %+v", r.Canary)
		}
		// What the translation makes of a path: the rules must compile.
		pt := l7proxy.PathPrefix
		if r.regexPaths() {
			if _, err := regexp.Compile("(?i)^" + path); err != nil || !strings.HasPrefix(path, "/") {
				return // reported by the translation as a path error
			}
			pt = l7proxy.PathRegex
		}
		main := &canaryBackend{upstream: "c", canary: canaryAnnotations{Header: r.Canary.Header, HeaderValue: r.Canary.HeaderValue,
			Cookie: r.Canary.Cookie, Weight: r.Canary.Weight}}
		route := l7proxy.Route{Path: path, PathType: pt, Upstream: "m", Ingress: "ns/x", Rules: routeRules(r, path, "m", main)}
		var routes []l7proxy.Route
		if pt == l7proxy.PathPrefix {
			route.Path = "/"
		}
		routes = append(routes, route)
		if r.AppRoot != "" {
			routes = append(routes, l7proxy.Route{Path: "/", PathType: l7proxy.PathExact, Ingress: "ns/x", Rules: appRootRules(r.AppRoot)})
		}
		if _, errs := l7proxy.Compile(l7proxy.Config{Routes: routes, Upstreams: []l7proxy.Upstream{{Name: "m"}, {Name: "c"}}}); len(errs) > 0 {
			t.Fatalf("annotations %q accepted, rules refused: %v", in, errs)
		}
	})
}

// FuzzParseAnnotationSet: any set of annotations ("name=value" lines,
// names under either prefix or none) parses without a panic; an error is
// an *AnnotationError naming one of them, unknown names are among them,
// and the canary and timeout values stay in range.
func FuzzParseAnnotationSet(f *testing.F) {
	for _, s := range []string{
		"nginx.ingress.kubernetes.io/canary=true\nnginx.ingress.kubernetes.io/canary-weight-total=50\nnginx.ingress.kubernetes.io/canary-by-header-pattern=^a$",
		"nodegress.io/proxy-ssl-secret=ns/s\nnginx.ingress.kubernetes.io/proxy-ssl-verify=on\nnodegress.io/proxy-ssl-verify-depth=2",
		"nginx.ingress.kubernetes.io/server-snippet=x\nnodegress.io/auth-url=y",
		"nginx.ingress.kubernetes.io/cors-expose-headers=*\nnginx.ingress.kubernetes.io/cors-max-age=5\nnginx.ingress.kubernetes.io/enable-cors=true",
		"nginx.ingress.kubernetes.io/proxy-send-timeout=60\nnodegress.io/ssl-passthrough=true\nnginx.ingress.kubernetes.io/load-balance=ewma",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		in := map[string]string{}
		for _, line := range strings.Split(data, "\n") {
			k, v, _ := strings.Cut(line, "=")
			in[k] = v
		}
		a, unknown, err := parseAnnotations(in)
		for _, k := range unknown {
			if _, ok := in[k]; !ok {
				t.Fatalf("unknown %q was not given", k)
			}
		}
		if err != nil {
			ae, ok := err.(*AnnotationError)
			if !ok || ae.Error() == "" {
				t.Fatalf("error %v is not an *AnnotationError", err)
			}
			if _, ok := in[ae.Annotation]; !ok {
				t.Fatalf("error %v names an annotation that was not given", err)
			}
			return
		}
		c := a.Routing.Canary
		if c.Weight < 0 || c.WeightTotal < 0 || a.SendTimeout < 0 || a.Routing.ProxySSL.VerifyDepth < 0 {
			t.Fatalf("out of range: %+v", a)
		}
	})
}
