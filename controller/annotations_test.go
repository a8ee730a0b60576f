package controller

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nodegress/nodegress/l7proxy"
)

func TestParseAnnotations(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        ingressAnnotations
		unknown     []string
		// badAnnotation is the annotation named by the error, "" when
		// the annotations are valid.
		badAnnotation string
	}{
		{name: "none"},
		{
			name:        "other prefixes are not ours",
			annotations: map[string]string{"example.com/ssl-redirect": "maybe", "kubernetes.io/ingress.class": "x"},
		},
		{name: "ssl-redirect true", annotations: map[string]string{AnnotationSSLRedirect: "true"}, want: ingressAnnotations{SSLRedirect: true}},
		{name: "ssl-redirect False", annotations: map[string]string{AnnotationSSLRedirect: "False"}},
		{name: "ssl-redirect yes", annotations: map[string]string{AnnotationSSLRedirect: "yes"}, badAnnotation: AnnotationSSLRedirect},
		{name: "ssl-redirect empty", annotations: map[string]string{AnnotationSSLRedirect: ""}, badAnnotation: AnnotationSSLRedirect},
		{name: "protocol http", annotations: map[string]string{AnnotationBackendProtocol: "HTTP"}},
		{name: "protocol https", annotations: map[string]string{AnnotationBackendProtocol: "https"}, want: ingressAnnotations{Protocol: l7proxy.ProtocolHTTPS}},
		{name: "protocol h2c", annotations: map[string]string{AnnotationBackendProtocol: "H2C"}, want: ingressAnnotations{Protocol: l7proxy.ProtocolH2C}},
		{name: "protocol grpc is h2c", annotations: map[string]string{AnnotationBackendProtocol: "grpc"}, want: ingressAnnotations{Protocol: l7proxy.ProtocolH2C}},
		{name: "protocol grpcs is https", annotations: map[string]string{AnnotationBackendProtocol: "GRPCS"}, want: ingressAnnotations{Protocol: l7proxy.ProtocolHTTPS}},
		{name: "protocol fcgi", annotations: map[string]string{AnnotationBackendProtocol: "FCGI"}, badAnnotation: AnnotationBackendProtocol},
		{name: "proxy protocol v1", annotations: map[string]string{AnnotationProxyProtocol: "v1"}, want: ingressAnnotations{ProxyProtocol: 1}},
		{name: "proxy protocol V2", annotations: map[string]string{AnnotationProxyProtocol: "V2"}, want: ingressAnnotations{ProxyProtocol: 2}},
		{name: "proxy protocol v3", annotations: map[string]string{AnnotationProxyProtocol: "v3"}, badAnnotation: AnnotationProxyProtocol},
		{name: "proxy protocol to h2c", annotations: map[string]string{AnnotationProxyProtocol: "v2", AnnotationBackendProtocol: "h2c"}, badAnnotation: AnnotationProxyProtocol},
		{name: "balance round robin", annotations: map[string]string{AnnotationLoadBalance: "round_robin"}},
		{name: "balance least request", annotations: map[string]string{AnnotationLoadBalance: "least_request"}, want: ingressAnnotations{Balance: l7proxy.LeastRequest}},
		{name: "balance ewma", annotations: map[string]string{AnnotationLoadBalance: "ewma"}, badAnnotation: AnnotationLoadBalance},
		{name: "body size bytes", annotations: map[string]string{AnnotationProxyBodySize: "1048576"}, want: ingressAnnotations{MaxBodyBytes: 1 << 20}},
		{name: "body size k", annotations: map[string]string{AnnotationProxyBodySize: "512k"}, want: ingressAnnotations{MaxBodyBytes: 512 << 10}},
		{name: "body size M", annotations: map[string]string{AnnotationProxyBodySize: "8M"}, want: ingressAnnotations{MaxBodyBytes: 8 << 20}},
		{name: "body size g", annotations: map[string]string{AnnotationProxyBodySize: "1g"}, want: ingressAnnotations{MaxBodyBytes: 1 << 30}},
		{name: "body size 0 is unlimited", annotations: map[string]string{AnnotationProxyBodySize: "0"}, want: ingressAnnotations{MaxBodyBytes: -1}},
		{name: "body size 0m is unlimited", annotations: map[string]string{AnnotationProxyBodySize: "0m"}, want: ingressAnnotations{MaxBodyBytes: -1}},
		{name: "body size negative", annotations: map[string]string{AnnotationProxyBodySize: "-1"}, badAnnotation: AnnotationProxyBodySize},
		{name: "body size fraction", annotations: map[string]string{AnnotationProxyBodySize: "1.5m"}, badAnnotation: AnnotationProxyBodySize},
		{name: "body size unit", annotations: map[string]string{AnnotationProxyBodySize: "8mb"}, badAnnotation: AnnotationProxyBodySize},
		{name: "body size only unit", annotations: map[string]string{AnnotationProxyBodySize: "m"}, badAnnotation: AnnotationProxyBodySize},
		{name: "body size overflow", annotations: map[string]string{AnnotationProxyBodySize: "99999999999g"}, badAnnotation: AnnotationProxyBodySize},
		{
			name: "timeouts",
			annotations: map[string]string{
				AnnotationProxyConnectTimeout:                "5s",
				AnnotationProxyReadTimeout:                   "60",
				AnnotationProxyIdleTimeout:                   "1m30s",
				NginxAnnotationPrefix + "proxy-send-timeout": "2m",
			},
			want: ingressAnnotations{ConnectTimeout: 5 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 90 * time.Second, SendTimeout: 2 * time.Minute},
		},
		{name: "timeout zero", annotations: map[string]string{AnnotationProxyReadTimeout: "0"}, badAnnotation: AnnotationProxyReadTimeout},
		{name: "timeout negative", annotations: map[string]string{AnnotationProxyConnectTimeout: "-5s"}, badAnnotation: AnnotationProxyConnectTimeout},
		{name: "timeout without unit fraction", annotations: map[string]string{AnnotationProxyIdleTimeout: "1.5"}, badAnnotation: AnnotationProxyIdleTimeout},
		{name: "timeout garbage", annotations: map[string]string{AnnotationProxyIdleTimeout: "soon"}, badAnnotation: AnnotationProxyIdleTimeout},
		{name: "timeout overflow", annotations: map[string]string{AnnotationProxyReadTimeout: "99999999999999999"}, badAnnotation: AnnotationProxyReadTimeout},
		{
			name:        "unknown ones are returned, sorted",
			annotations: map[string]string{AnnotationPrefix + "rewrite-targte": "/", AnnotationPrefix + "ssl-redirct": "true", AnnotationSSLRedirect: "true"},
			want:        ingressAnnotations{SSLRedirect: true},
			unknown:     []string{AnnotationPrefix + "rewrite-targte", AnnotationPrefix + "ssl-redirct"},
		},
		{
			name:          "the first invalid one by name is reported",
			annotations:   map[string]string{AnnotationProxyReadTimeout: "x", AnnotationLoadBalance: "y"},
			badAnnotation: AnnotationLoadBalance,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, unknown, err := parseAnnotations(tt.annotations)
			if !slices.Equal(unknown, tt.unknown) {
				t.Errorf("unknown %q, want %q", unknown, tt.unknown)
			}
			if tt.badAnnotation != "" {
				var ae *AnnotationError
				if !errors.As(err, &ae) {
					t.Fatalf("err %v, want an *AnnotationError", err)
				}
				if ae.Annotation != tt.badAnnotation || ae.Value != tt.annotations[tt.badAnnotation] {
					t.Errorf("error names %s=%q, want %s=%q", ae.Annotation, ae.Value, tt.badAnnotation, tt.annotations[tt.badAnnotation])
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUpstreamName(t *testing.T) {
	tests := []struct {
		ann  ingressAnnotations
		want string
	}{
		{ingressAnnotations{}, "ns/svc:http"},
		{ingressAnnotations{SSLRedirect: true, MaxBodyBytes: 5}, "ns/svc:http"}, // route options, not upstream settings
		{ingressAnnotations{Protocol: l7proxy.ProtocolH2C}, "ns/svc:http/h2c"},
		{ingressAnnotations{Protocol: l7proxy.ProtocolHTTPS, Balance: l7proxy.LeastRequest}, "ns/svc:http/https/least_request"},
		{ingressAnnotations{ConnectTimeout: time.Second, ReadTimeout: time.Minute, IdleTimeout: 90 * time.Second}, "ns/svc:http/connect=1s/read=1m0s/idle=1m30s"},
		{ingressAnnotations{SendTimeout: 30 * time.Second}, "ns/svc:http/send=30s"},
		{ingressAnnotations{ProxyProtocol: 2}, "ns/svc:http/proxy-protocol=v2"},
	}
	for _, tt := range tests {
		if got := upstreamName("ns/svc:http", tt.ann); got != tt.want {
			t.Errorf("upstreamName(%+v) = %q, want %q", tt.ann, got, tt.want)
		}
	}
}
