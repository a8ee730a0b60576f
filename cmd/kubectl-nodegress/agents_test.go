package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

func TestFindAgents(t *testing.T) {
	old, now := time.Unix(1000, 0), time.Unix(2000, 0)
	pod := func(name, node string, created time.Time, change func(*corev1.Pod)) *corev1.Pod {
		p := agentPod(node, created)
		p.Name = name
		if change != nil {
			change(p)
		}
		return p
	}
	pending := func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }
	unready := func(p *corev1.Pod) { p.Status.ContainerStatuses[0].Ready = false }
	terminating := func(p *corev1.Pod) {
		p.DeletionTimestamp = &metav1.Time{Time: now}
		p.Finalizers = []string{"test"}
	}
	otherApp := func(p *corev1.Pod) { p.Labels = map[string]string{"app": "web"} }
	pods := []runtime.Object{
		pod("a-old", "node1", old, nil),
		pod("a-new", "node1", now, nil), // a rolling update's new agent
		pod("b-new", "node2", now, unready),
		pod("b-old", "node2", old, nil), // still the one serving node2
		pod("c", "node3", old, pending),
		pod("d", "node4", old, terminating),
		pod("web", "node5", old, otherApp),
	}
	tests := []struct {
		nodes   []string
		want    []string // node=pod
		missing []string
	}{
		// Every node with an agent pod: the unusable ones are reported.
		{
			nodes:   nil,
			want:    []string{"node1=a-new", "node2=b-old"},
			missing: []string{"node node3: agent pod c is pending", "node node4: agent pod d is terminating"},
		},
		{nodes: []string{"node2", "node1", "node2"}, want: []string{"node1=a-new", "node2=b-old"}},
		{
			nodes:   []string{"node1", "node3", "node4", "node5"},
			want:    []string{"node1=a-new"},
			missing: []string{"node node3: agent pod c is pending", "node node4: agent pod d is terminating", "node node5: no agent pod in namespace nodegress"},
		},
	}
	client := fake.NewClientset(pods...)
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.nodes), func(t *testing.T) {
			agents, missing, err := findAgents(context.Background(), client, defaultNamespace, defaultSelector, defaultContainer, tt.nodes)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range agents {
				if a.Namespace != defaultNamespace || a.Container != defaultContainer {
					t.Errorf("agent %+v: wrong namespace or container", a)
				}
				got = append(got, a.Node+"="+a.Pod)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("agents %v, want %v", got, tt.want)
			}
			if len(missing) != len(tt.missing) {
				t.Fatalf("missing %v, want %v", missing, tt.missing)
			}
			for i, m := range missing {
				if !strings.HasPrefix(m.Error(), tt.missing[i]) {
					t.Errorf("missing[%d] = %q, want it to start with %q", i, m, tt.missing[i])
				}
			}
		})
	}

	if _, _, err := findAgents(context.Background(), fake.NewClientset(), defaultNamespace, defaultSelector, defaultContainer, nil); err == nil {
		t.Error("no agent pods at all: want an error")
	}
}
