package harness

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/tests/netns"
)

// Manifests is a --standalone directory of Kubernetes YAML files.
type Manifests struct {
	// Dir is the directory the agents watch.
	Dir string
	// stage holds files being written, on the same file system as Dir so a
	// rename publishes each file whole: an agent never reads half a file.
	stage string
}

// NewManifests creates an empty standalone directory.
func NewManifests(t testing.TB) *Manifests {
	t.Helper()
	root := t.TempDir()
	m := &Manifests{Dir: filepath.Join(root, "standalone"), stage: filepath.Join(root, "stage")}
	for _, d := range []string{m.Dir, m.stage} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// Write atomically replaces the file name with the given YAML documents.
func (m *Manifests) Write(t testing.TB, name string, docs ...string) {
	t.Helper()
	m.WriteRaw(t, name, strings.Join(docs, "---\n"))
}

// WriteRaw atomically replaces the file name with content as is.
func (m *Manifests) WriteRaw(t testing.TB, name, content string) {
	t.Helper()
	tmp := filepath.Join(m.stage, name)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.Dir, name)); err != nil {
		t.Fatal(err)
	}
}

// Remove deletes the file name.
func (m *Manifests) Remove(t testing.TB, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(m.Dir, name)); err != nil {
		t.Fatal(err)
	}
}

// NodeYAML is the Node object of a topology node, with its wire address as
// InternalIP and its pod range.
func NodeYAML(n *netns.Node) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Node
metadata:
  name: %s
  labels:
    kubernetes.io/hostname: %s
    kubernetes.io/os: linux
spec:
  podCIDR: %s
  podCIDRs:
  - %s
status:
  addresses:
  - type: InternalIP
    address: %s
  - type: Hostname
    address: %s
`, n.Name, n.Name, n.PodCIDR, n.PodCIDR, n.Addr, n.Name)
}

// NodesYAML is the Node objects of every node of tp.
func NodesYAML(tp *netns.Topology) []string {
	var docs []string
	for _, n := range tp.Nodes {
		docs = append(docs, NodeYAML(n))
	}
	return docs
}

// Port is one port of a Service.
type Port struct {
	// Name defaults to the lower-case protocol.
	Name string
	// Protocol is TCP (default) or UDP.
	Protocol   string
	Port       uint16
	TargetPort uint16
	// NodePort is set explicitly: tests must know where to connect.
	NodePort uint16
}

func (p Port) protocol() string {
	if p.Protocol == "" {
		return "TCP"
	}
	return p.Protocol
}

func (p Port) name() string {
	if p.Name == "" {
		return strings.ToLower(p.protocol())
	}
	return p.Name
}

// Endpoint is one pod behind a Service.
type Endpoint struct {
	Pod *netns.Pod
	// Terminating marks an endpoint being deleted: not ready, still
	// serving, keeps its flows.
	Terminating bool
}

// Service describes a Service and its EndpointSlice.
type Service struct {
	Name string
	// Namespace defaults to "default".
	Namespace string
	// Type is NodePort (default), LoadBalancer or ClusterIP.
	Type string
	// ClusterIP is spec.clusterIP (none when invalid).
	ClusterIP netip.Addr
	// InternalTrafficPolicy is Cluster (default) or Local.
	InternalTrafficPolicy string
	Ports                 []Port
	ExternalIPs           []netip.Addr
	// LoadBalancerIPs go to status.loadBalancer.ingress.
	LoadBalancerIPs []netip.Addr
	// ExternalTrafficPolicy is Cluster (default) or Local.
	ExternalTrafficPolicy string
	// LoadBalancerSourceRanges restrict the LoadBalancerIPs' clients.
	LoadBalancerSourceRanges []string
	// AffinitySeconds > 0 sets sessionAffinity ClientIP with that timeout.
	AffinitySeconds int
	// Annotations go to the Service's metadata.
	Annotations map[string]string
	Endpoints   []Endpoint
}

func (s Service) namespace() string {
	if s.Namespace == "" {
		return "default"
	}
	return s.Namespace
}

// YAML returns the Service and its EndpointSlice as two YAML documents.
func (s Service) YAML() []string {
	return []string{s.serviceYAML(), s.sliceYAML()}
}

func (s Service) serviceYAML() string {
	typ := s.Type
	if typ == "" {
		typ = "NodePort"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: %s
`, s.Name, s.namespace())
	if len(s.Annotations) > 0 {
		b.WriteString("  annotations:\n")
		for _, k := range slices.Sorted(maps.Keys(s.Annotations)) {
			fmt.Fprintf(&b, "    %s: %q\n", k, s.Annotations[k])
		}
	}
	fmt.Fprintf(&b, `spec:
  type: %s
  selector:
    app: %s
`, typ, s.Name)
	if s.ClusterIP.IsValid() {
		fmt.Fprintf(&b, "  clusterIP: %s\n  clusterIPs:\n  - %s\n", s.ClusterIP, s.ClusterIP)
	}
	if s.InternalTrafficPolicy != "" {
		fmt.Fprintf(&b, "  internalTrafficPolicy: %s\n", s.InternalTrafficPolicy)
	}
	if typ != "ClusterIP" {
		etp := s.ExternalTrafficPolicy
		if etp == "" {
			etp = "Cluster"
		}
		fmt.Fprintf(&b, "  externalTrafficPolicy: %s\n", etp)
	}
	if len(s.LoadBalancerSourceRanges) > 0 {
		b.WriteString("  loadBalancerSourceRanges:\n")
		for _, r := range s.LoadBalancerSourceRanges {
			fmt.Fprintf(&b, "  - %s\n", r)
		}
	}
	if s.AffinitySeconds > 0 {
		fmt.Fprintf(&b, "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: %d\n", s.AffinitySeconds)
	}
	if len(s.ExternalIPs) > 0 {
		b.WriteString("  externalIPs:\n")
		for _, ip := range s.ExternalIPs {
			fmt.Fprintf(&b, "  - %s\n", ip)
		}
	}
	b.WriteString("  ports:\n")
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "  - name: %s\n    protocol: %s\n    port: %d\n    targetPort: %d\n",
			p.name(), p.protocol(), p.Port, p.TargetPort)
		if p.NodePort != 0 && typ != "ClusterIP" {
			fmt.Fprintf(&b, "    nodePort: %d\n", p.NodePort)
		}
	}
	if len(s.LoadBalancerIPs) > 0 {
		b.WriteString("status:\n  loadBalancer:\n    ingress:\n")
		for _, ip := range s.LoadBalancerIPs {
			fmt.Fprintf(&b, "    - ip: %s\n", ip)
		}
	}
	return b.String()
}

func (s Service) sliceYAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s-1
  namespace: %s
  labels:
    kubernetes.io/service-name: %s
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
`, s.Name, s.namespace(), s.Name)
	b.WriteString("ports:\n")
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "- name: %s\n  protocol: %s\n  port: %d\n", p.name(), p.protocol(), p.TargetPort)
	}
	if len(s.Endpoints) == 0 {
		b.WriteString("endpoints: []\n")
		return b.String()
	}
	b.WriteString("endpoints:\n")
	for _, e := range s.Endpoints {
		fmt.Fprintf(&b, `- addresses:
  - %s
  conditions:
    ready: %t
    serving: true
    terminating: %t
  nodeName: %s
  targetRef:
    kind: Pod
    name: %s
    namespace: %s
`, e.Pod.Addr, !e.Terminating, e.Terminating, e.Pod.Node.Name, e.Pod.Name, s.namespace())
	}
	return b.String()
}

// Endpoints is a helper building ready endpoints for pods.
func Endpoints(pods ...*netns.Pod) []Endpoint {
	eps := make([]Endpoint, 0, len(pods))
	for _, p := range pods {
		eps = append(eps, Endpoint{Pod: p})
	}
	return eps
}
