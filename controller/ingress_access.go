package controller

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodegress/nodegress/l7proxy"
)

// Event reasons of access control.
const (
	// ReasonInvalidAuthSecret: an auth-secret holds no usable htpasswd
	// data; the Ingress answers 503 until it is fixed.
	ReasonInvalidAuthSecret = "InvalidAuthSecret"
	// ReasonNoDefaultBackend: custom-http-errors without a default
	// backend to ask for the pages.
	ReasonNoDefaultBackend = "NoDefaultBackend"
)

// DefaultSessionCookieName is ingress-nginx's session-cookie-name default.
const DefaultSessionCookieName = "INGRESSCOOKIE"

// authSecretKey is the Secret key holding an htpasswd file (auth-file).
const authSecretKey = "auth"

// access translates an Ingress's access-control annotations into the
// proxy's Access (nil: none). An error is an *AnnotationError that takes
// the Ingress out. A missing or unusable auth Secret is reported and
// makes the Ingress answer 503: serving it without the authentication
// it asks for would expose what it protects.
func (t *ingressTranslator) access(ing *networkingv1.Ingress, key string, a accessAnnotations) (*l7proxy.Access, error) {
	if reflect.DeepEqual(a, accessAnnotations{}) {
		return nil, nil
	}
	if name, err := a.check(); err != nil {
		k := annotationKey(ing.Annotations, name)
		return nil, &AnnotationError{Annotation: k, Value: ing.Annotations[k], Err: err}
	}
	acc := &l7proxy.Access{Allow: a.AllowRanges, Deny: a.DenyRanges}
	if acc.Allow == nil {
		acc.Allow = a.AllowRangesAlt
	}
	if a.LimitRPS > 0 || a.LimitRPM > 0 || a.LimitConnections > 0 {
		acc.RateLimit = &l7proxy.RateLimit{RPS: a.LimitRPS, RPM: a.LimitRPM, Connections: a.LimitConnections,
			BurstMultiplier: a.LimitBurstMultiplier, Exempt: a.LimitExempt}
	}
	if a.Affinity == "cookie" {
		acc.Affinity = &l7proxy.CookieAffinity{
			Name:            cmp.Or(a.CookieName, DefaultSessionCookieName),
			Path:            a.CookiePath,
			MaxAge:          a.CookieMaxAge,
			Expires:         a.CookieExpires,
			SameSite:        a.CookieSameSite,
			Secure:          a.CookieSecure,
			ChangeOnFailure: a.CookieChangeOnFailure,
			Key:             affinityKey(ing),
		}
	}
	if a.AuthType == "basic" {
		ba, err := t.basicAuth(ing, key, a)
		var ae *AnnotationError
		switch {
		case errors.As(err, &ae):
			return nil, err
		case err != nil:
			t.report("Ingress", key, false, fmt.Errorf("%w; requests get 503", err))
			acc.Denied = err.Error()
		default:
			acc.BasicAuth = ba
		}
	}
	if a.AuthURL != "" {
		if err := checkAuthServer(ing, a.AuthURL); err != nil {
			k := annotationKey(ing.Annotations, "auth-url")
			return nil, &AnnotationError{Annotation: k, Value: ing.Annotations[k], Err: err}
		}
		acc.ExternalAuth = &l7proxy.ExternalAuth{
			URL:                 a.AuthURL,
			Method:              a.AuthMethod,
			SigninURL:           a.AuthSignin,
			SigninRedirectParam: a.AuthSigninParam,
			ResponseHeaders:     a.AuthResponseHeaders,
			RequestRedirect:     a.AuthRequestRedirect,
			CacheKey:            a.AuthCacheKey,
			CacheRules:          a.AuthCacheRules,
		}
	}
	if a.DefaultBackend != "" || a.CustomHTTPErrors != nil {
		acc.DefaultUpstream = t.defaultBackendUpstream(ing, key, a.DefaultBackend)
		acc.ErrorCodes = a.CustomHTTPErrors
		if acc.DefaultUpstream == "" {
			t.report("Ingress", key, false, withReason(ReasonNoDefaultBackend,
				errors.New("custom-http-errors needs default-backend (or the agent's default backend service); error pages not served")))
			acc.ErrorCodes = nil
		}
	}
	return acc, nil
}

// checkAuthServer refuses an auth-url whose server the client could
// choose. The auth request leaves from the node and its 2xx answer lets
// the request through, so a client naming the server would bypass the
// authentication (its own server says yes) and make the node send
// requests where it likes. The variables in the URL's authority decide:
// the request URI is the client's, and $http_host and $best_http_host
// carry the port the client wrote. $host is the request's host: one of
// the Ingress's own hosts when every rule names an exact one (the request
// matched that rule), any host the client likes for a rule without host
// or with a wildcard, or for a defaultBackend.
func checkAuthServer(ing *networkingv1.Ingress, authURL string) error {
	authority := authURL
	if _, rest, ok := strings.Cut(authority, "://"); ok {
		authority = rest
	}
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	if !strings.Contains(authority, "$") {
		return nil
	}
	for _, v := range []string{"$request_uri", "$escaped_request_uri", "$http_host", "$best_http_host"} {
		if strings.Contains(authority, v) {
			return fmt.Errorf("%s in the server part would let the client choose the auth server; use $host with exact hosts, or a fixed server", v)
		}
	}
	if !strings.Contains(authority, "$host") {
		return nil // $scheme or $pass_access_scheme: http or https, chosen by the Ingress's author
	}
	anyHost := ing.Spec.DefaultBackend != nil || len(ing.Spec.Rules) == 0
	for _, r := range ing.Spec.Rules {
		if r.Host == "" || strings.HasPrefix(r.Host, "*.") {
			anyHost = true
		}
	}
	if anyHost {
		return errors.New("$host in the server part would let the client choose the auth server: the ingress has a rule without host, a wildcard host or a defaultBackend; use a fixed server")
	}
	return nil
}

// annotationKey is the key an annotation name was given under, for
// errors: nodegress's prefix, else ingress-nginx's.
func annotationKey(annotations map[string]string, name string) string {
	for _, p := range []string{AnnotationPrefix, "nginx.ingress.kubernetes.io/"} {
		if _, ok := annotations[p+name]; ok {
			return p + name
		}
	}
	return AnnotationPrefix + name
}

// affinityKey keys the session cookies of an Ingress. Its UID is the same
// on every node and across restarts, and is not known to clients, so a
// cookie does not tell them which pod it names. (Objects without a UID,
// as standalone YAML may have, fall back to the namespace and name.)
func affinityKey(ing *networkingv1.Ingress) []byte {
	sum := sha256.Sum256([]byte("nodegress session cookie\x00" + string(ing.UID) + "\x00" + ing.Namespace + "/" + ing.Name))
	return sum[:]
}

// basicAuth reads the users of an Ingress's auth-secret. Secrets of
// other namespaces are refused (an *AnnotationError), as ingress-nginx
// does by default. Other errors say why the Secret cannot be used.
func (t *ingressTranslator) basicAuth(ing *networkingv1.Ingress, key string, a accessAnnotations) (*l7proxy.BasicAuth, error) {
	ns, name, cut := strings.Cut(a.AuthSecret, "/")
	if !cut {
		ns, name = ing.Namespace, a.AuthSecret
	}
	if ns != ing.Namespace {
		k := annotationKey(ing.Annotations, "auth-secret")
		return nil, &AnnotationError{Annotation: k, Value: ing.Annotations[k], Err: errors.New("secrets of other namespaces are not read")}
	}
	secKey := ns + "/" + name
	sec := t.authSecret(secKey)
	if sec == nil {
		return nil, withReason(ReasonMissingSecret, fmt.Errorf("auth-secret %s not found", secKey))
	}
	var users map[string]string
	switch a.AuthSecretType {
	case "", "auth-file":
		data, ok := sec.Data[authSecretKey]
		if !ok {
			return nil, withReason(ReasonInvalidAuthSecret, fmt.Errorf("auth-secret %s has no %q key (auth-file)", secKey, authSecretKey))
		}
		var err error
		if users, err = l7proxy.ParseHtpasswd(data); err != nil {
			return nil, withReason(ReasonInvalidAuthSecret, fmt.Errorf("auth-secret %s: %w", secKey, err))
		}
	case "auth-map":
		users = make(map[string]string, len(sec.Data))
		for u, h := range sec.Data {
			users[u] = strings.TrimSpace(string(h))
		}
		if len(users) == 0 {
			return nil, withReason(ReasonInvalidAuthSecret, fmt.Errorf("auth-secret %s has no user (auth-map)", secKey))
		}
	}
	ba, err := l7proxy.NewBasicAuth(a.AuthRealm, users)
	if err != nil {
		return nil, withReason(ReasonInvalidAuthSecret, fmt.Errorf("auth-secret %s: %w", secKey, err))
	}
	return ba, nil
}

// authSecret returns a Secret other than a TLS one by namespace/name.
func (t *ingressTranslator) authSecret(key string) *corev1.Secret {
	if t.authSecrets == nil {
		t.authSecrets = map[string]*corev1.Secret{}
		for _, s := range t.in.Secrets {
			if s.Type != corev1.SecretTypeTLS {
				t.authSecrets[s.Namespace+"/"+s.Name] = s
			}
		}
	}
	return t.authSecrets[key]
}

// defaultBackendUpstream is the upstream of an Ingress's default-backend
// annotation: a Service of its namespace, on its first port, as
// ingress-nginx. Without the annotation it is the agent's default
// backend service, if any; "" when there is none.
func (t *ingressTranslator) defaultBackendUpstream(ing *networkingv1.Ingress, key, svcName string) string {
	if svcName == "" {
		if t.cfg.DefaultBackendService == "" {
			return ""
		}
		ref, err := parseServiceRef(t.cfg.DefaultBackendService, true)
		if err != nil {
			return ""
		}
		name, _ := t.serviceUpstream(ref, ingressAnnotations{})
		return name
	}
	ref := serviceRef{Namespace: ing.Namespace, Name: svcName}
	if svc, _ := t.service(ref.key()); svc != nil && len(svc.Spec.Ports) > 0 {
		p := svc.Spec.Ports[0]
		if p.Name != "" {
			ref.Port.Name = p.Name
		} else {
			ref.Port.Number = p.Port
		}
	} else {
		ref.Port.Number = 80 // reported below; the upstream has no endpoint
	}
	name, problem := t.serviceUpstream(ref, ingressAnnotations{})
	if problem != nil {
		t.report("Ingress", key, false, fmt.Errorf("default-backend: %w; requests for it get 503", problem))
	}
	return name
}
