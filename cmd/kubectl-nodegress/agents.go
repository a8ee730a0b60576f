package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The agents as manifests/ installs them: the DaemonSet's namespace, its
// pods' labels and the container running the agent.
const (
	defaultNamespace = "nodegress"
	defaultSelector  = "app.kubernetes.io/name=nodegress,app.kubernetes.io/component=agent"
	defaultContainer = "agent"
	defaultBinary    = "/nodegress"
)

// agent is the pod whose agent serves one node.
type agent struct {
	Node      string
	Namespace string
	Pod       string
	Container string
}

// findAgents lists the agent pods and picks one per node: a running pod
// whose agent container is ready, the newest such during a rolling update
// (the one the node's traffic now goes through). nodes narrows the choice;
// a node asked for without a usable agent is reported in missing, with why.
func findAgents(ctx context.Context, client kubernetes.Interface, namespace, selector, container string, nodes []string) (agents []agent, missing []error, err error) {
	pods, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, nil, fmt.Errorf("list agent pods in %s (%s): %w", namespace, selector, err)
	}
	best := map[string]*corev1.Pod{}
	unusable := map[string]string{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == "" {
			continue
		}
		if why := notServing(p, container); why != "" {
			unusable[p.Spec.NodeName] = fmt.Sprintf("agent pod %s %s", p.Name, why)
			continue
		}
		if b := best[p.Spec.NodeName]; b == nil || b.CreationTimestamp.Before(&p.CreationTimestamp) {
			best[p.Spec.NodeName] = p
		}
	}
	want := slices.Clone(nodes)
	if len(want) == 0 {
		// Every node with an agent pod, usable or not: one that is
		// pending, unready or terminating is reported, not skipped.
		for n := range best {
			want = append(want, n)
		}
		for n := range unusable {
			want = append(want, n)
		}
		if len(best) == 0 {
			return nil, nil, fmt.Errorf("no running agent pod in namespace %s with labels %s", namespace, selector)
		}
	}
	slices.Sort(want)
	for _, n := range slices.Compact(want) {
		p := best[n]
		if p == nil {
			why := unusable[n]
			if why == "" {
				why = fmt.Sprintf("no agent pod in namespace %s with labels %s", namespace, selector)
			}
			missing = append(missing, fmt.Errorf("node %s: %s", n, why))
			continue
		}
		agents = append(agents, agent{Node: n, Namespace: p.Namespace, Pod: p.Name, Container: container})
	}
	return agents, missing, nil
}

// notServing says why a pod's agent cannot be asked, or "" when it can.
func notServing(p *corev1.Pod, container string) string {
	if p.DeletionTimestamp != nil {
		return "is terminating"
	}
	if p.Status.Phase != corev1.PodRunning {
		return "is " + strings.ToLower(string(p.Status.Phase))
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name != container {
			continue
		}
		if !s.Ready {
			return fmt.Sprintf("has container %s not ready", container)
		}
		return ""
	}
	return "has no container " + container
}

// splitNodes accepts --node repeated or comma-separated.
func splitNodes(values []string) []string {
	var nodes []string
	for _, v := range values {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				nodes = append(nodes, n)
			}
		}
	}
	return nodes
}
