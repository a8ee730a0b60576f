package controller

import (
	"strings"
	"testing"

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
			if !ok || !strings.HasPrefix(ae.Annotation, AnnotationPrefix) || annotationParsers[ae.Annotation] == nil {
				t.Fatalf("error %v does not name a known annotation", err)
			}
			return
		}
		if a.MaxBodyBytes < -1 || a.ConnectTimeout < 0 || a.ReadTimeout < 0 || a.ProxyProtocol > 2 {
			t.Fatalf("out of range: %+v", a)
		}
	})
}
