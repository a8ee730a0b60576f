package controller

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwscheme "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/scheme"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// objectKey identifies one object across files and updates.
type objectKey struct {
	Kind      string
	Namespace string // empty for cluster-scoped kinds
	Name      string
}

func (k objectKey) String() string {
	if k.Namespace == "" {
		return k.Kind + " " + k.Name
	}
	return k.Kind + " " + k.Namespace + "/" + k.Name
}

// kindInfo describes a kind the standalone source accepts.
type kindInfo struct {
	gvk        schema.GroupVersionKind
	namespaced bool
	// gateway: watched only with the Gateway API on (Gateway API kinds
	// are stored in their own clientset).
	gateway bool
	// resource, when set, is the resource name the guess from the kind
	// gets wrong ("Gateway" would be "gatewaies").
	resource string
}

// acceptedKinds are the kinds the standalone source stores, by Kind. Each is
// accepted in one API version only: the one the informers watch.
var acceptedKinds = map[string]kindInfo{
	"Service":          {gvk: corev1.SchemeGroupVersion.WithKind("Service"), namespaced: true},
	"Node":             {gvk: corev1.SchemeGroupVersion.WithKind("Node")},
	"Secret":           {gvk: corev1.SchemeGroupVersion.WithKind("Secret"), namespaced: true},
	"EndpointSlice":    {gvk: discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"), namespaced: true},
	"Ingress":          {gvk: networkingv1.SchemeGroupVersion.WithKind("Ingress"), namespaced: true},
	"IngressClass":     {gvk: networkingv1.SchemeGroupVersion.WithKind("IngressClass")},
	"Namespace":        {gvk: corev1.SchemeGroupVersion.WithKind("Namespace"), gateway: true},
	"GatewayClass":     {gvk: gwapi.SchemeGroupVersion.WithKind("GatewayClass"), gateway: true},
	"Gateway":          {gvk: gwapi.SchemeGroupVersion.WithKind("Gateway"), namespaced: true, gateway: true, resource: "gateways"},
	"HTTPRoute":        {gvk: gwapi.SchemeGroupVersion.WithKind("HTTPRoute"), namespaced: true, gateway: true},
	"GRPCRoute":        {gvk: gwapi.SchemeGroupVersion.WithKind("GRPCRoute"), namespaced: true, gateway: true},
	"TLSRoute":         {gvk: gwapi.SchemeGroupVersion.WithKind("TLSRoute"), namespaced: true, gateway: true},
	"BackendTLSPolicy": {gvk: gwapi.SchemeGroupVersion.WithKind("BackendTLSPolicy"), namespaced: true, gateway: true, resource: "backendtlspolicies"},
	"ConfigMap":        {gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap"), namespaced: true, gateway: true},
	"ReferenceGrant":   {gvk: gwapi.SchemeGroupVersion.WithKind("ReferenceGrant"), namespaced: true, gateway: true},
	"ListenerSet":      {gvk: gwapi.SchemeGroupVersion.WithKind("ListenerSet"), namespaced: true, gateway: true},
}

// decodeScheme knows the kinds of client-go and of the Gateway API.
var decodeScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(scheme.AddToScheme(s))
	utilruntime.Must(gwscheme.AddToScheme(s))
	return s
}()

// strictDecoder rejects unknown and duplicate fields, like
// `kubectl apply --validate=strict`: in a hand-written file an unknown field
// is almost always a typo ("nodeport:") that would otherwise silently change
// what is served.
var strictDecoder = serializer.NewCodecFactory(decodeScheme, serializer.EnableStrict).UniversalDeserializer()

// document is one YAML document of a file.
type document struct {
	Index int // 1-based position in the file
	Line  int // 1-based line of its first line in the file
	Data  []byte
}

// splitDocuments splits a multi-document YAML stream on "---" separator
// lines, with the same rule as k8s.io/apimachinery/pkg/util/yaml's
// YAMLReader (a line starting with "---" followed by nothing but spaces or a
// comment), but keeps each document's first line number so errors can point
// into the file. Documents holding nothing are still returned (and counted)
// so indexes match what a reader of the file counts.
func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start, line := 1, 0
	flush := func() {
		docs = append(docs, document{Index: len(docs) + 1, Line: start, Data: bytes.Clone(cur.Bytes())})
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if rest, ok := bytes.CutPrefix(text, []byte("---")); ok {
			if r := bytes.TrimSpace(rest); len(r) == 0 || r[0] == '#' {
				// A leading separator does not open an empty first document.
				if line > 1 || cur.Len() > 0 {
					flush()
				}
				start = line + 1
				continue
			}
		}
		cur.Write(text)
		cur.WriteByte('\n')
	}
	if cur.Len() > 0 || len(docs) == 0 {
		flush()
	}
	return docs
}

// decodedObject is one object read from a file.
type decodedObject struct {
	Key    objectKey
	Object runtime.Object
	Doc    int // document index in the file
	Line   int // first line of the document
}

// docError is a problem with one document (or one item of a List document).
type docError struct {
	Doc  int
	Line int
	// Key is the object the document meant to define, zero when the
	// document is too broken to tell.
	Key objectKey
	Err error
	// Ignored marks documents that are fine but of a kind nodegress does not
	// use: a debug line, not a warning.
	Ignored bool
}

func (e *docError) Error() string {
	if e.Key.Kind != "" {
		return fmt.Sprintf("document %d (line %d) %s: %v", e.Doc, e.Line, e.Key, e.Err)
	}
	return fmt.Sprintf("document %d (line %d): %v", e.Doc, e.Line, e.Err)
}

func (e *docError) Unwrap() error { return e.Err }

// decodeFile decodes every document of one file. Bad documents are
// reported and skipped; they never hide the good ones.
func decodeFile(data []byte) ([]decodedObject, []*docError) {
	var objs []decodedObject
	var errs []*docError
	for _, d := range splitDocuments(data) {
		o, e := decodeDocument(d)
		objs = append(objs, o...)
		errs = append(errs, e...)
	}
	return objs, errs
}

// yamlLineRE finds the document-relative line number in YAML parser errors.
var yamlLineRE = regexp.MustCompile(`yaml: line (\d+)`)

// fileLine rewrites "yaml: line N" (relative to the document) into the line
// of the file, which is what an operator looks up.
func fileLine(err error, docLine int) error {
	msg := err.Error()
	m := yamlLineRE.FindStringSubmatchIndex(msg)
	if m == nil {
		return err
	}
	n, convErr := strconv.Atoi(msg[m[2]:m[3]])
	if convErr != nil {
		return err
	}
	return errors.New(msg[:m[0]] + "yaml: line " + strconv.Itoa(docLine+n-1) + msg[m[1]:])
}

// header is the part of an object read leniently to name it in errors even
// when the strict decode fails.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

func decodeDocument(d document) ([]decodedObject, []*docError) {
	js, err := yaml.YAMLToJSON(d.Data)
	if err != nil {
		return nil, []*docError{{Doc: d.Index, Line: d.Line, Err: fmt.Errorf("yaml syntax: %w", fileLine(err, d.Line))}}
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
		return nil, nil // only comments or blank
	}
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return nil, []*docError{{Doc: d.Index, Line: d.Line, Err: fmt.Errorf("not a Kubernetes object: %w", err)}}
	}
	// kubectl get -o yaml writes a v1 List; accept it so a dump of a
	// cluster can be used as is.
	if h.Kind == "List" && h.APIVersion == "v1" {
		var objs []decodedObject
		var errs []*docError
		for i, item := range h.Items {
			o, e := decodeObject(d, item)
			for _, de := range e {
				de.Err = fmt.Errorf("list item %d: %w", i+1, de.Err)
			}
			objs = append(objs, o...)
			errs = append(errs, e...)
		}
		return objs, errs
	}
	return decodeObject(d, js)
}

func decodeObject(d document, js []byte) ([]decodedObject, []*docError) {
	bad := func(key objectKey, err error) ([]decodedObject, []*docError) {
		return nil, []*docError{{Doc: d.Index, Line: d.Line, Key: key, Err: err}}
	}
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return bad(objectKey{}, fmt.Errorf("not a Kubernetes object: %w", err))
	}
	if h.Kind == "" || h.APIVersion == "" {
		return bad(objectKey{}, errors.New("apiVersion and kind are required"))
	}
	info, ok := acceptedKinds[h.Kind]
	if !ok {
		return nil, []*docError{{Doc: d.Index, Line: d.Line, Key: objectKey{Kind: h.Kind, Namespace: h.Metadata.Namespace, Name: h.Metadata.Name}, Err: fmt.Errorf("kind %s (%s) is not used, ignored", h.Kind, h.APIVersion), Ignored: true}}
	}
	if h.Metadata.Name == "" {
		return bad(objectKey{}, fmt.Errorf("%s without metadata.name", h.Kind))
	}
	key := objectKey{Kind: h.Kind, Name: h.Metadata.Name}
	if info.namespaced {
		key.Namespace = h.Metadata.Namespace
		if key.Namespace == "" {
			key.Namespace = corev1.NamespaceDefault
		}
	}
	if gv := info.gvk.GroupVersion().String(); h.APIVersion != gv {
		return bad(key, fmt.Errorf("apiVersion %s is not supported for %s, use %s", h.APIVersion, h.Kind, gv))
	}
	obj, _, err := strictDecoder.Decode(js, nil, nil)
	if err != nil {
		return bad(key, err)
	}
	if err := validateObject(obj); err != nil {
		return bad(key, fmt.Errorf("invalid: %w", err))
	}
	normalize(obj, key)
	return []decodedObject{{Key: key, Object: obj, Doc: d.Index, Line: d.Line}}, nil
}
