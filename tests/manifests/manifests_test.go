// Package manifests_test installs manifests/ on a real kube-apiserver
// (tests/kube) with kubectl, as a user would, and checks what it created:
// the agent's ServiceAccount may do what the agent needs and nothing else,
// and the DaemonSet runs the agent with flags it accepts.
package manifests_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/kube"
)

const (
	namespace = "nodegress"
	agentSA   = "system:serviceaccount:nodegress:nodegress"
	// Bounds the wait for objects and for RBAC to see the new bindings
	// (the authorizer reads them from an informer cache).
	settleTimeout = 30 * time.Second
)

func TestMain(m *testing.M) { harness.Main(m) }

// podSecurityDefault makes the API server enforce the restricted Pod
// Security level wherever a namespace does not say otherwise, as hardened
// clusters do: the agent's privileged pod must be admitted by its
// namespace's labels, not by a permissive default.
const podSecurityDefault = `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults:
        enforce: restricted
        enforce-version: latest
`

// TestManifests applies the kustomization once and runs every check on
// the result.
func TestManifests(t *testing.T) {
	admission := filepath.Join(t.TempDir(), "admission.yaml")
	if err := os.WriteFile(admission, []byte(podSecurityDefault), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := kube.Start(t, kube.WithAPIServerArgs("--admission-control-config-file="+admission))
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "manifests")

	out := cp.MustKubectl("apply", "-k", dir)
	t.Logf("kubectl apply -k manifests/:\n%s", bytes.TrimSpace(out))
	waitFor(t, "objects to exist", func() error {
		_, err := cp.Kubectl("-n", namespace, "get",
			"namespace/nodegress", "serviceaccount/nodegress", "clusterrole/nodegress",
			"clusterrolebinding/nodegress", "role/nodegress", "rolebinding/nodegress",
			"ingressclass/nodegress", "daemonset/nodegress")
		return err
	})
	// Applying again changes nothing: the kustomization is stable (no
	// generated names or fields that differ between runs).
	again := cp.MustKubectl("apply", "-k", dir)
	for _, line := range strings.Split(strings.TrimSpace(string(again)), "\n") {
		if !strings.HasSuffix(line, " unchanged") {
			t.Errorf("second apply changed something: %q", line)
		}
	}

	var ds appsv1.DaemonSet
	getJSON(t, cp, &ds, "-n", namespace, "get", "daemonset/nodegress")
	if len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("daemonset has %d containers, want 1", len(ds.Spec.Template.Spec.Containers))
	}
	agent := ds.Spec.Template.Spec.Containers[0]
	var flags corev1.ConfigMap
	getJSON(t, cp, &flags, "-n", namespace, "get", "configmap/"+configMapName(t, agent))

	// The Gateway API's CRDs install as documented (server-side: they are
	// too large for client-side apply); RBAC is then checked for them too.
	out = cp.MustKubectl("apply", "--server-side", "-k", filepath.Join(dir, "gateway-api", "crds"))
	t.Logf("kubectl apply --server-side -k manifests/gateway-api/crds:\n%s", bytes.TrimSpace(out))
	cp.MustKubectl("wait", "--for=condition=Established", "--timeout=60s",
		"crd/gatewayclasses.gateway.networking.k8s.io", "crd/gateways.gateway.networking.k8s.io",
		"crd/httproutes.gateway.networking.k8s.io", "crd/referencegrants.gateway.networking.k8s.io")

	t.Run("rbac", func(t *testing.T) { testRBAC(t, cp) })
	// After the base checks: the grant of the optional file is added.
	t.Run("rbac gateway services", func(t *testing.T) { testGatewayServicesRBAC(t, cp, dir) })
	t.Run("daemonset", func(t *testing.T) { testDaemonSet(t, &ds, &flags) })
	t.Run("flags", func(t *testing.T) { testFlags(t, agent, &flags) })
	t.Run("pod admission", func(t *testing.T) { testPodAdmission(t, cp, &ds) })
	t.Run("ingressclass", func(t *testing.T) {
		var ic networkingv1.IngressClass
		getJSON(t, cp, &ic, "get", "ingressclass/nodegress")
		if got, want := ic.Spec.Controller, flags.Data["INGRESS_CONTROLLER_NAME"]; got != want {
			t.Errorf("IngressClass controller %q, agent serves %q", got, want)
		}
		if v := ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass]; v == "true" {
			t.Error("IngressClass nodegress is the cluster's default class")
		}
	})
	t.Run("gateway api", func(t *testing.T) {
		cp.MustKubectl("apply", "-f", filepath.Join(dir, "gateway-api", "gatewayclass.yaml"))
		var gc struct {
			Spec struct {
				ControllerName string `json:"controllerName"`
			} `json:"spec"`
		}
		getJSON(t, cp, &gc, "get", "gatewayclass/nodegress")
		if got, want := gc.Spec.ControllerName, flags.Data["GATEWAY_CONTROLLER_NAME"]; got != want {
			t.Errorf("GatewayClass controllerName %q, agent serves %q", got, want)
		}
	})
}

// testRBAC asks the API server, impersonating the agent's ServiceAccount,
// what it may do. ns "" means across all namespaces (and is the only way
// to ask about cluster-scoped resources).
func testRBAC(t *testing.T, cp *kube.ControlPlane) {
	tests := []struct {
		verb, resource, sub, ns string
		want                    bool
	}{
		// What the informers and the status write-back need.
		{verb: "list", resource: "services", want: true},
		{verb: "watch", resource: "services", want: true},
		{verb: "get", resource: "services", ns: "default", want: true},
		{verb: "list", resource: "endpointslices.discovery.k8s.io", want: true},
		{verb: "watch", resource: "endpointslices.discovery.k8s.io", want: true},
		{verb: "list", resource: "nodes", want: true},
		{verb: "watch", resource: "nodes", want: true},
		{verb: "get", resource: "nodes", want: true},
		{verb: "list", resource: "ingresses.networking.k8s.io", want: true},
		{verb: "watch", resource: "ingresses.networking.k8s.io", want: true},
		{verb: "get", resource: "ingresses.networking.k8s.io", ns: "default", want: true},
		{verb: "list", resource: "ingressclasses.networking.k8s.io", want: true},
		{verb: "watch", resource: "ingressclasses.networking.k8s.io", want: true},
		{verb: "list", resource: "secrets", want: true},
		{verb: "watch", resource: "secrets", want: true},
		{verb: "update", resource: "ingresses.networking.k8s.io", sub: "status", ns: "default", want: true},
		{verb: "create", resource: "events", ns: "default", want: true},
		{verb: "patch", resource: "events", ns: "default", want: true},
		{verb: "create", resource: "events.events.k8s.io", ns: "default", want: true},
		{verb: "get", resource: "leases.coordination.k8s.io", ns: namespace, want: true},
		{verb: "list", resource: "leases.coordination.k8s.io", ns: namespace, want: true},
		{verb: "watch", resource: "leases.coordination.k8s.io", ns: namespace, want: true},
		{verb: "create", resource: "leases.coordination.k8s.io", ns: namespace, want: true},
		{verb: "update", resource: "leases.coordination.k8s.io", ns: namespace, want: true},
		{verb: "list", resource: "gatewayclasses.gateway.networking.k8s.io", want: true},
		{verb: "watch", resource: "gateways.gateway.networking.k8s.io", want: true},
		{verb: "list", resource: "httproutes.gateway.networking.k8s.io", want: true},
		{verb: "watch", resource: "grpcroutes.gateway.networking.k8s.io", want: true},
		{verb: "update", resource: "grpcroutes.gateway.networking.k8s.io", sub: "status", ns: "default", want: true},
		{verb: "update", resource: "grpcroutes.gateway.networking.k8s.io", ns: "default"},
		{verb: "watch", resource: "tlsroutes.gateway.networking.k8s.io", want: true},
		{verb: "update", resource: "tlsroutes.gateway.networking.k8s.io", sub: "status", ns: "default", want: true},
		{verb: "update", resource: "tlsroutes.gateway.networking.k8s.io", ns: "default"},
		{verb: "watch", resource: "referencegrants.gateway.networking.k8s.io", want: true},
		{verb: "watch", resource: "backendtlspolicies.gateway.networking.k8s.io", want: true},
		{verb: "watch", resource: "listenersets.gateway.networking.k8s.io", want: true},
		{verb: "update", resource: "listenersets.gateway.networking.k8s.io", sub: "status", ns: "default", want: true},
		{verb: "update", resource: "listenersets.gateway.networking.k8s.io", ns: "default"},
		{verb: "update", resource: "backendtlspolicies.gateway.networking.k8s.io", sub: "status", ns: "default", want: true},
		{verb: "update", resource: "backendtlspolicies.gateway.networking.k8s.io", ns: "default"},
		{verb: "watch", resource: "configmaps", want: true},
		{verb: "update", resource: "configmaps", ns: "default"},
		{verb: "list", resource: "namespaces", want: true},
		{verb: "update", resource: "gatewayclasses.gateway.networking.k8s.io", sub: "status", want: true},
		{verb: "update", resource: "gateways.gateway.networking.k8s.io", sub: "status", ns: "default", want: true},
		{verb: "update", resource: "httproutes.gateway.networking.k8s.io", sub: "status", ns: "default", want: true},

		// The Gateway API's objects: status only, by update.
		{verb: "create", resource: "gateways.gateway.networking.k8s.io", ns: "default"},
		{verb: "update", resource: "gateways.gateway.networking.k8s.io", ns: "default"},
		{verb: "patch", resource: "httproutes.gateway.networking.k8s.io", ns: "default"},
		{verb: "delete", resource: "gatewayclasses.gateway.networking.k8s.io"},
		{verb: "update", resource: "referencegrants.gateway.networking.k8s.io", ns: "default"},
		{verb: "patch", resource: "gateways.gateway.networking.k8s.io", sub: "status", ns: "default"},
		{verb: "update", resource: "namespaces"},

		// Secrets are read, never written.
		{verb: "create", resource: "secrets", ns: "default"},
		{verb: "update", resource: "secrets", ns: "default"},
		{verb: "patch", resource: "secrets", ns: "default"},
		{verb: "delete", resource: "secrets", ns: "default"},
		{verb: "deletecollection", resource: "secrets", ns: namespace},
		// Pods: nothing at all.
		{verb: "get", resource: "pods", ns: "default"},
		{verb: "list", resource: "pods"},
		{verb: "watch", resource: "pods"},
		{verb: "create", resource: "pods", ns: "default"},
		{verb: "update", resource: "pods", ns: "default"},
		{verb: "patch", resource: "pods", ns: "default"},
		{verb: "delete", resource: "pods", ns: "default"},
		{verb: "create", resource: "pods", sub: "exec", ns: "default"},
		{verb: "create", resource: "pods", sub: "eviction", ns: "default"},
		// Services, EndpointSlices, Nodes: read only.
		{verb: "create", resource: "services", ns: "default"},
		{verb: "update", resource: "services", ns: "default"},
		{verb: "patch", resource: "services", ns: "default"},
		{verb: "delete", resource: "services", ns: "default"},
		{verb: "update", resource: "services", sub: "status", ns: "default"},
		{verb: "create", resource: "endpointslices.discovery.k8s.io", ns: "default"},
		{verb: "update", resource: "endpointslices.discovery.k8s.io", ns: "default"},
		{verb: "delete", resource: "endpointslices.discovery.k8s.io", ns: "default"},
		{verb: "create", resource: "nodes"},
		{verb: "update", resource: "nodes"},
		{verb: "patch", resource: "nodes"},
		{verb: "delete", resource: "nodes"},
		{verb: "update", resource: "nodes", sub: "status"},
		// Ingresses: status only, by update.
		{verb: "create", resource: "ingresses.networking.k8s.io", ns: "default"},
		{verb: "update", resource: "ingresses.networking.k8s.io", ns: "default"},
		{verb: "patch", resource: "ingresses.networking.k8s.io", ns: "default"},
		{verb: "delete", resource: "ingresses.networking.k8s.io", ns: "default"},
		{verb: "patch", resource: "ingresses.networking.k8s.io", sub: "status", ns: "default"},
		{verb: "create", resource: "ingressclasses.networking.k8s.io"},
		{verb: "update", resource: "ingressclasses.networking.k8s.io"},
		{verb: "delete", resource: "ingressclasses.networking.k8s.io"},
		// Leases: only in its own namespace, never deleted.
		{verb: "create", resource: "leases.coordination.k8s.io", ns: "default"},
		{verb: "update", resource: "leases.coordination.k8s.io", ns: "kube-system"},
		{verb: "get", resource: "leases.coordination.k8s.io", ns: "kube-node-lease"},
		{verb: "list", resource: "leases.coordination.k8s.io"},
		{verb: "delete", resource: "leases.coordination.k8s.io", ns: namespace},
		// ConfigMaps are read (the CA certificates of the Gateway API),
		// never written.
		{verb: "create", resource: "configmaps", ns: namespace},
		{verb: "update", resource: "configmaps", ns: namespace},
		{verb: "patch", resource: "configmaps", ns: namespace},
		{verb: "delete", resource: "configmaps", ns: namespace},
		// Events are written, not read or removed.
		{verb: "list", resource: "events"},
		{verb: "delete", resource: "events", ns: "default"},
		// Nothing that leads to more privileges.
		{verb: "create", resource: "serviceaccounts", sub: "token", ns: namespace},
		{verb: "create", resource: "rolebindings.rbac.authorization.k8s.io", ns: namespace},
		{verb: "create", resource: "clusterrolebindings.rbac.authorization.k8s.io"},
		{verb: "escalate", resource: "clusterroles.rbac.authorization.k8s.io"},
		{verb: "bind", resource: "clusterroles.rbac.authorization.k8s.io"},
		{verb: "impersonate", resource: "serviceaccounts", ns: namespace},
		{verb: "impersonate", resource: "users"},
		{verb: "update", resource: "daemonsets.apps", ns: namespace},
		{verb: "*", resource: "*"},
	}
	// The first allowed check also waits for the authorizer to see the
	// bindings just created.
	waitFor(t, "RBAC to grant the agent", func() error {
		allowed, err := canI(cp, "list", "services", "", "")
		if err == nil && !allowed {
			err = errors.New("list services still denied")
		}
		return err
	})
	for _, tt := range tests {
		where := "all namespaces"
		if tt.ns != "" {
			where = "namespace " + tt.ns
		}
		res := tt.resource
		if tt.sub != "" {
			res += "/" + tt.sub
		}
		t.Run(fmt.Sprintf("%s %s in %s", tt.verb, res, where), func(t *testing.T) {
			got, err := canI(cp, tt.verb, tt.resource, tt.sub, tt.ns)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("allowed = %v, want %v", got, tt.want)
			}
		})
	}
}

// testGatewayServicesRBAC applies manifests/gateway-api/service-addresses.yaml
// (GATEWAY_ADDRESS_SOURCE=service) and checks that it grants the agent
// what the Gateways' Services need (create, server-side apply, delete)
// and nothing more on Services.
func testGatewayServicesRBAC(t *testing.T, cp *kube.ControlPlane, dir string) {
	cp.MustKubectl("apply", "-f", filepath.Join(dir, "gateway-api", "service-addresses.yaml"))
	waitFor(t, "RBAC to grant the gateway services", func() error {
		allowed, err := canI(cp, "create", "services", "", "default")
		if err == nil && !allowed {
			err = errors.New("create services still denied")
		}
		return err
	})
	for _, tt := range []struct {
		verb, sub string
		want      bool
	}{
		{verb: "create", want: true},
		{verb: "patch", want: true},
		{verb: "delete", want: true},
		{verb: "update"},
		{verb: "deletecollection"},
		{verb: "update", sub: "status"},
		{verb: "patch", sub: "status"},
	} {
		res := "services"
		if tt.sub != "" {
			res += "/" + tt.sub
		}
		t.Run(tt.verb+" "+res, func(t *testing.T) {
			got, err := canI(cp, tt.verb, "services", tt.sub, "app")
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("allowed = %v, want %v", got, tt.want)
			}
		})
	}
}

// canI runs `kubectl auth can-i` as the agent's ServiceAccount. kubectl
// exits 1 for "no", so the answer is read from standard output and an
// error is only one when the output is neither yes nor no.
func canI(cp *kube.ControlPlane, verb, resource, sub, ns string) (bool, error) {
	args := []string{"auth", "can-i", verb, resource, "--as=" + agentSA}
	if sub != "" {
		args = append(args, "--subresource="+sub)
	}
	if ns == "" {
		args = append(args, "--all-namespaces")
	} else {
		args = append(args, "--namespace="+ns)
	}
	out, err := cp.Kubectl(args...)
	switch strings.TrimSpace(string(out)) {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, fmt.Errorf("kubectl %s: unexpected answer %q: %v", strings.Join(args, " "), out, err)
}

// testDaemonSet checks the DaemonSet as the API server stored it against
// what the datapath and the rollout rely on.
func testDaemonSet(t *testing.T, ds *appsv1.DaemonSet, flags *corev1.ConfigMap) {
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	args := argMap(c.Args)
	metricsPort := portOf(t, args["metrics-addr"])
	shutdown, err := time.ParseDuration(flags.Data["SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("SHUTDOWN_TIMEOUT: %v", err)
	}
	rolling := ds.Spec.UpdateStrategy.RollingUpdate
	if rolling == nil || rolling.MaxUnavailable == nil || rolling.MaxSurge == nil || pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("rolling update or termination grace period not set")
	}

	tests := []struct {
		name      string
		got, want any
	}{
		{"service account", pod.ServiceAccountName, "nodegress"},
		{"host network", pod.HostNetwork, true},
		{"dns policy", pod.DNSPolicy, corev1.DNSClusterFirstWithHostNet},
		{"privileged", c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged, true},
		{"bpffs host path", hostPath(pod, "/sys/fs/bpf"), "/sys/fs/bpf"},
		{"bpffs propagation", propagation(mountOf(c, "/sys/fs/bpf")), corev1.MountPropagationBidirectional},
		{"bpffs holds --bpffs", strings.HasPrefix(args["bpffs"], "/sys/fs/bpf/"), true},
		{"btf host path", hostPath(pod, "/sys/kernel/btf"), "/sys/kernel/btf"},
		{"btf read-only", mountOf(c, "/sys/kernel/btf").ReadOnly, true},
		{"trace socket on the host", hostPath(pod, filepath.Dir(args["trace-socket"])), "/run/nodegress"},
		{"NODE_NAME", fieldRef(c, "NODE_NAME"), "spec.nodeName"},
		{"POD_NAMESPACE", fieldRef(c, "POD_NAMESPACE"), "metadata.namespace"},
		{"--node-name", args["node-name"], "$(NODE_NAME)"},
		{"--election-namespace", args["election-namespace"], "$(POD_NAMESPACE)"},
		// The pod's own agent, not whichever holds the node's port.
		{"startup", probe(c.StartupProbe), "healthz@" + args["health-socket"]},
		{"liveness", probe(c.LivenessProbe), "healthz@" + args["health-socket"]},
		{"readiness", probe(c.ReadinessProbe), "readyz@" + args["health-socket"]},
		{"health socket in the pod's own volume", emptyDirAt(pod, c, filepath.Dir(args["health-socket"])), true},
		{"scrape", ds.Spec.Template.Annotations["prometheus.io/scrape"], "true"},
		{"scrape port", ds.Spec.Template.Annotations["prometheus.io/port"], metricsPort},
		{"cpu request", c.Resources.Requests.Cpu().IsZero(), false},
		{"memory request", c.Resources.Requests.Memory().IsZero(), false},
		{"memory limit", c.Resources.Limits.Memory().IsZero(), false},
		{"update strategy", ds.Spec.UpdateStrategy.Type, appsv1.RollingUpdateDaemonSetStrategyType},
		{"max unavailable", rolling.MaxUnavailable.String(), "0"},
		{"max surge", rolling.MaxSurge.String(), "1"},
		{"min ready seconds", ds.Spec.MinReadySeconds > 0, true},
		// A declared port is a host port with hostNetwork: the surge pod
		// would not be scheduled next to the old one.
		{"no host ports", len(c.Ports), 0},
		{"handover socket on the host", hostPath(pod, filepath.Dir(args["trace-socket"])), "/run/nodegress"},
		{"listener keeper is a sidecar", keeperRestart(pod), corev1.ContainerRestartPolicyAlways},
		{"listener keeper socket", keeperSocket(pod), args["listener-keeper"]},
		{"keeper socket in the pod's own volume", emptyDirAt(pod, c, filepath.Dir(args["listener-keeper"])), true},
		{"grace period covers --shutdown-timeout", time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second > shutdown, true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

// testPodAdmission submits, as a server-side dry run, the Pod the DaemonSet
// controller would create from the template (no controller runs here): the
// API server's admission checks it as on a cluster (ServiceAccount,
// priority class, Pod Security). The same Pod in a namespace without the
// nodegress namespace's labels must be refused, which shows the restricted
// default is in force.
func testPodAdmission(t *testing.T, cp *kube.ControlPlane, ds *appsv1.DaemonSet) {
	const plain = "plain"
	cp.MustKubectl("create", "namespace", plain)
	cp.MustKubectl("-n", plain, "create", "serviceaccount", "nodegress")
	tests := []struct {
		ns    string
		admit bool
	}{
		{ns: namespace, admit: true},
		{ns: plain, admit: false},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			pod := corev1.Pod{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
				ObjectMeta: metav1.ObjectMeta{
					Name:        "nodegress-node-1",
					Namespace:   tt.ns,
					Labels:      ds.Spec.Template.Labels,
					Annotations: ds.Spec.Template.Annotations,
				},
				Spec: ds.Spec.Template.Spec,
			}
			pod.Spec.NodeName = "node-1"
			b, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "pod.json")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = cp.Kubectl("create", "--dry-run=server", "-f", path)
			switch {
			case tt.admit && err != nil:
				t.Errorf("agent pod refused: %v", err)
			case !tt.admit && err == nil:
				t.Error("agent pod admitted without the namespace's Pod Security labels")
			case !tt.admit && !strings.Contains(err.Error(), "violates PodSecurity"):
				t.Errorf("agent pod refused, but not by Pod Security: %v", err)
			}
		})
	}
}

// testFlags expands the container's arguments as the kubelet does and
// hands them to the agent binary followed by -h: the flag package parses
// every argument before it, so an unknown flag or a bad value is reported
// ahead of the usage text. Nothing runs: -h stops the agent at parsing.
func testFlags(t *testing.T, c corev1.Container, flags *corev1.ConfigMap) {
	env := map[string]string{}
	for k, v := range flags.Data {
		env[k] = v
	}
	// Stand-ins for what the kubelet fills in from the downward API.
	fieldValues := map[string]string{
		"spec.nodeName":      "node-1",
		"metadata.namespace": namespace,
		"status.hostIP":      "192.0.2.10",
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			v, ok := fieldValues[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: no stand-in for field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		default:
			t.Fatalf("env %s: unexpected source", e.Name)
		}
	}
	var args []string
	for _, a := range c.Args {
		x := expand(a, env)
		if strings.Contains(x, "$(") {
			t.Errorf("argument %q: variable not defined by the ConfigMap or env", a)
		}
		args = append(args, x)
	}
	if len(args) == 0 || args[0] != "agent" {
		t.Fatalf("args %q do not start with the agent command", args)
	}
	if t.Failed() {
		return
	}
	bin := harness.Nodegress(t)
	cmd := exec.Command(bin, append(slices.Clone(args), "-h")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("nodegress agent -h did not exit within 30s")
	}
	first, _, _ := strings.Cut(stderr.String(), "\n")
	if first != "Usage of agent:" {
		t.Errorf("nodegress %s: %s", strings.Join(args, " "), first)
	}
	if lvl := env["LOG_LEVEL"]; !slices.Contains([]string{"debug", "info", "warn", "error"}, lvl) {
		t.Errorf("LOG_LEVEL %q: want debug, info, warn or error", lvl)
	}
	if f := env["LOG_FORMAT"]; f != "text" && f != "json" {
		t.Errorf("LOG_FORMAT %q: want text or json", f)
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with VAR's value when VAR is defined and leaves it
// alone otherwise, as the kubelet does with container arguments.
func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// configMapName is the generated (hashed) name of the ConfigMap the agent
// takes its flags from.
func configMapName(t *testing.T, c corev1.Container) string {
	t.Helper()
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef != nil {
			return src.ConfigMapRef.Name
		}
	}
	t.Fatal("agent container has no envFrom ConfigMap")
	return ""
}

// argMap maps "--name=value" arguments by name.
func argMap(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			m[name] = value
		}
	}
	return m
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("--metrics-addr %q: %v", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		t.Fatalf("--metrics-addr %q: port: %v", addr, err)
	}
	return port
}

// hostPath returns the host path of the volume mounted at mountPath.
func hostPath(pod corev1.PodSpec, mountPath string) string {
	m := mountOf(pod.Containers[0], mountPath)
	for _, v := range pod.Volumes {
		if v.Name == m.Name && v.HostPath != nil {
			return v.HostPath.Path
		}
	}
	return ""
}

func mountOf(c corev1.Container, path string) corev1.VolumeMount {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m
		}
	}
	return corev1.VolumeMount{}
}

// keeper is the listener keeper sidecar (an init container that keeps
// running).
func keeper(pod corev1.PodSpec) *corev1.Container {
	for i, c := range pod.InitContainers {
		if c.Name == "listener-keeper" {
			return &pod.InitContainers[i]
		}
	}
	return nil
}

func keeperRestart(pod corev1.PodSpec) corev1.ContainerRestartPolicy {
	if k := keeper(pod); k != nil && k.RestartPolicy != nil {
		return *k.RestartPolicy
	}
	return ""
}

// keeperSocket is the keeper's --socket.
func keeperSocket(pod corev1.PodSpec) string {
	k := keeper(pod)
	if k == nil {
		return ""
	}
	for _, a := range k.Args {
		if v, ok := strings.CutPrefix(a, "--socket="); ok {
			return v
		}
	}
	return ""
}

// emptyDirAt reports whether dir is an emptyDir mounted in both the agent
// and the keeper.
func emptyDirAt(pod corev1.PodSpec, agent corev1.Container, dir string) bool {
	k := keeper(pod)
	if k == nil {
		return false
	}
	am, km := mountOf(agent, dir), mountOf(*k, dir)
	if am.Name == "" || am.Name != km.Name {
		return false
	}
	for _, v := range pod.Volumes {
		if v.Name == am.Name {
			return v.EmptyDir != nil
		}
	}
	return false
}

func fieldRef(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

// probe returns "CHECK@SOCKET" of a `nodegress health` exec probe.
func probe(p *corev1.Probe) string {
	if p == nil || p.Exec == nil {
		return ""
	}
	cmd := p.Exec.Command
	if len(cmd) < 2 || cmd[0] != "/nodegress" || cmd[1] != "health" {
		return strings.Join(cmd, " ")
	}
	var check, socket string
	for _, a := range cmd[2:] {
		if v, ok := strings.CutPrefix(a, "--check="); ok {
			check = v
		}
		if v, ok := strings.CutPrefix(a, "--socket="); ok {
			socket = v
		}
	}
	return check + "@" + socket
}

func propagation(m corev1.VolumeMount) corev1.MountPropagationMode {
	if m.MountPropagation == nil {
		return corev1.MountPropagationNone
	}
	return *m.MountPropagation
}

func getJSON(t *testing.T, cp *kube.ControlPlane, into any, args ...string) {
	t.Helper()
	out, err := cp.Kubectl(append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, into); err != nil {
		t.Fatalf("decode %s: %v", strings.Join(args, " "), err)
	}
}

// waitFor retries fn until it succeeds, for at most settleTimeout.
func waitFor(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
