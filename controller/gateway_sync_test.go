package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
)

func TestSpecChanged(t *testing.T) {
	route := func(gen int64, status string, deleting bool) *gwapi.HTTPRoute {
		r := &gwapi.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Generation: gen}}
		if status != "" {
			r.Status.Parents = []gwapi.RouteParentStatus{{ControllerName: gwapi.GatewayController(status)}}
		}
		if deleting {
			r.DeletionTimestamp = &metav1.Time{}
		}
		return r
	}
	ns := func(team string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"team": team}}}
	}
	for _, tc := range []struct {
		name     string
		old, cur any
		want     bool
	}{
		{"status write", route(3, "", false), route(3, "nodegress.io/gateway-controller", false), false},
		{"spec change", route(3, "", false), route(4, "", false), true},
		{"deletion", route(3, "", false), route(3, "", true), true},
		{"namespace labels", ns("a"), ns("b"), true},
		{"not an object", "x", "y", true},
	} {
		if got := specChanged(tc.old, tc.cur); got != tc.want {
			t.Errorf("%s: specChanged %v, want %v", tc.name, got, tc.want)
		}
	}
}
