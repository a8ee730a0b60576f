package controller

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

const webService = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  ports:
  - name: http
    port: 80
    nodePort: 30080
    targetPort: http
`

const webSlice = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
- addresses: ["10.0.0.1"]
  nodeName: node-a
`

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lines []int
	}{
		{"single", "a: 1\nb: 2\n", []int{1}},
		{"leading separator", "---\na: 1\n", []int{2}},
		{"two documents", "a: 1\n---\nb: 2\n", []int{1, 3}},
		{"separator with comment and empty document", "a: 1\n--- # next\n---\nb: 2\n", []int{1, 3, 4}},
		{"no trailing newline", "a: 1\n---\nb: 2", []int{1, 3}},
		{"dashes inside a value are not a separator", "a: |\n  x\n  ---foo\n", []int{1}},
		{"empty", "", []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs := splitDocuments([]byte(tt.in))
			var lines []int
			for i, d := range docs {
				if d.Index != i+1 {
					t.Errorf("doc %d has index %d", i, d.Index)
				}
				lines = append(lines, d.Line)
			}
			if !reflect.DeepEqual(lines, tt.lines) {
				t.Errorf("start lines %v, want %v", lines, tt.lines)
			}
		})
	}
}

func TestDecodeFile(t *testing.T) {
	type wantErr struct {
		doc, line int
		key       string // objectKey.String(), "" when unidentified
		contains  string
		ignored   bool
	}
	tests := []struct {
		name     string
		in       string
		wantKeys []string
		wantErrs []wantErr
	}{
		{
			name:     "multi-document with default namespace",
			in:       webService + "---\n" + webSlice,
			wantKeys: []string{"Service default/web", "EndpointSlice default/web-1"},
		},
		{
			name: "all accepted kinds; cluster-scoped kinds lose their namespace",
			in: `apiVersion: v1
kind: Node
metadata: {name: node-a, namespace: ignored}
status:
  addresses: [{type: InternalIP, address: 10.1.0.5}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nodegress}
spec: {controller: nodegress.io/ingress}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: shop}
spec: {ingressClassName: nodegress}
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: shop}
type: kubernetes.io/tls
data: {}
`,
			wantKeys: []string{"Node node-a", "IngressClass nodegress", "Ingress shop/site", "Secret shop/tls"},
		},
		{
			name: "YAML syntax error names the file line; other documents still decode",
			in:   webService + "---\n" + "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\n   oops: [\n---\n" + webSlice,
			// The broken document starts on line 13; the error is on its
			// line 5, line 17 of the file.
			wantKeys: []string{"Service default/web", "EndpointSlice default/web-1"},
			wantErrs: []wantErr{{doc: 2, line: 13, contains: "yaml: line 17:"}},
		},
		{
			name:     "unknown kind and unused kind are ignored",
			in:       "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: c}\n---\n" + webService,
			wantKeys: []string{"Service default/web"},
			wantErrs: []wantErr{{doc: 1, line: 1, key: "Widget w", ignored: true}, {doc: 2, line: 5, key: "Pod c", ignored: true}},
		},
		{
			name:     "wrong field type",
			in:       strings.Replace(webService, "port: 80", "port: eighty", 1),
			wantErrs: []wantErr{{doc: 1, line: 1, key: "Service default/web", contains: "port"}},
		},
		{
			name:     "unknown field is rejected",
			in:       strings.Replace(webService, "nodePort: 30080", "nodeport: 30080", 1),
			wantErrs: []wantErr{{doc: 1, line: 1, key: "Service default/web", contains: `unknown field "spec.ports[0].nodeport"`}},
		},
		{
			name:     "missing name",
			in:       "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\nspec: {}\n",
			wantErrs: []wantErr{{doc: 1, line: 1, contains: "metadata.name"}},
		},
		{
			name:     "invalid port",
			in:       strings.Replace(webService, "port: 80", "port: 70000", 1),
			wantErrs: []wantErr{{doc: 1, line: 1, key: "Service default/web", contains: "spec.ports[0].port 70000"}},
		},
		{
			name:     "unsupported apiVersion of a known kind",
			in:       strings.Replace(webSlice, "discovery.k8s.io/v1", "discovery.k8s.io/v1beta1", 1),
			wantErrs: []wantErr{{doc: 1, line: 1, key: "EndpointSlice default/web-1", contains: "use discovery.k8s.io/v1"}},
		},
		{
			name:     "missing kind",
			in:       "apiVersion: v1\nmetadata: {name: x}\n",
			wantErrs: []wantErr{{doc: 1, line: 1, contains: "kind"}},
		},
		{
			name:     "comments only and empty documents",
			in:       "# nothing here\n---\n---\n",
			wantKeys: nil,
		},
		{
			name: "v1 List from kubectl get -o yaml",
			in: "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.TrimSpace(webService), "\n", "\n  ") +
				"\n- {apiVersion: v1, kind: Service, metadata: {name: broken}, spec: {ports: [{port: 0}]}}\n",
			wantKeys: []string{"Service default/web"},
			wantErrs: []wantErr{{doc: 1, line: 1, key: "Service default/broken", contains: "list item 2"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, errs := decodeFile([]byte(tt.in))
			var keys []string
			for _, o := range objs {
				keys = append(keys, o.Key.String())
			}
			if !reflect.DeepEqual(keys, tt.wantKeys) {
				t.Errorf("objects %q, want %q", keys, tt.wantKeys)
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("errors %v, want %d", errs, len(tt.wantErrs))
			}
			for i, e := range errs {
				w := tt.wantErrs[i]
				key := ""
				if e.Key.Kind != "" {
					key = e.Key.String()
				}
				if e.Doc != w.doc || e.Line != w.line || key != w.key || e.Ignored != w.ignored || !strings.Contains(e.Err.Error(), w.contains) {
					t.Errorf("error %d: got doc %d line %d key %q ignored %v %q; want %+v", i, e.Doc, e.Line, key, e.Ignored, e.Err, w)
				}
			}
		})
	}
}

func TestDecodeFileTypes(t *testing.T) {
	objs, errs := decodeFile([]byte(webService + "---\n" + webSlice))
	if len(errs) != 0 || len(objs) != 2 {
		t.Fatalf("objs %v errs %v", objs, errs)
	}
	svc, ok := objs[0].Object.(*corev1.Service)
	if !ok || svc.Namespace != "default" || svc.Spec.Ports[0].NodePort != 30080 || svc.Spec.Ports[0].TargetPort.StrVal != "http" {
		t.Errorf("service decoded as %#v", objs[0].Object)
	}
	slice, ok := objs[1].Object.(*discoveryv1.EndpointSlice)
	if !ok || *slice.Endpoints[0].NodeName != "node-a" || *slice.Ports[0].Port != 8080 {
		t.Errorf("slice decoded as %#v", objs[1].Object)
	}
	if objs[1].Doc != 2 || objs[1].Line != 13 {
		t.Errorf("slice position doc %d line %d, want 2, 13", objs[1].Doc, objs[1].Line)
	}
}
