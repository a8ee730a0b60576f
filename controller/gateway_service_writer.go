package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
)

// The elected status writer also keeps the Gateways' Services (address
// source "service") as the translation decided: it applies each one
// wanted (server-side apply, so a load balancer controller's fields and
// a label the Gateway stopped asking for are handled by the API server)
// and deletes those of its own no Gateway wants any more. The garbage
// collector deletes a Service with its Gateway anyway (the owner
// reference); deleting here covers a Gateway that changed class or got
// spec.addresses.

// serviceStatusKey names a Gateway's Service in the writer's queue.
func serviceStatusKey(nsName string) string { return kindService + "/" + nsName }

// gatewayServiceSelector selects the Services nodegress made for Gateways.
var gatewayServiceSelector = labels.SelectorFromSet(labels.Set{labelManagedBy: managedByNodegress})

// cachedGatewayServices are the keys of the Services in the informer
// cache that nodegress made for Gateways.
func (w *gatewayStatusWriter) cachedGatewayServices() []string {
	if w.c.services == nil {
		return nil
	}
	svcs, err := w.c.services.List(gatewayServiceSelector)
	if err != nil {
		return nil
	}
	var keys []string
	for _, s := range svcs {
		if isGatewayService(s) {
			keys = append(keys, serviceStatusKey(s.Namespace+"/"+s.Name))
		}
	}
	return keys
}

// serviceChanged queues a check of a Service nodegress made or wants:
// one deleted or edited by someone else is put back.
func (w *gatewayStatusWriter) serviceChanged(obj any) {
	svc, ok := objectOf(obj).(*corev1.Service)
	if !ok {
		return
	}
	key := svc.Namespace + "/" + svc.Name
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, wanted := w.decided.Services[key]; (wanted || isGatewayService(svc)) && w.queue != nil {
		w.queue.Add(serviceStatusKey(key))
	}
}

// writeService brings one Service to the decision: applied when wanted
// and not current, deleted when it is nodegress's and not wanted. Before
// the first decision nothing is deleted: everything would look unwanted.
func (w *gatewayStatusWriter) writeService(ctx context.Context, ns, name string) error {
	w.mu.Lock()
	want, decided := w.decided.Services[ns+"/"+name], w.decided.Services != nil
	w.mu.Unlock()
	cur, err := w.c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		cur, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("get service %s/%s: %w", ns, name, err)
	}
	api := w.c.client.CoreV1().Services(ns)
	switch {
	case want == nil:
		if !decided || cur == nil || !madeBy(cur, w.ctrl) {
			return nil
		}
		err := api.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete service %s/%s: %w", ns, name, err)
		}
		w.mu.Lock()
		delete(w.externalIPsRefused, ns+"/"+name)
		w.mu.Unlock()
		w.log.Info("deleted gateway service", "svc", ns+"/"+name)
		return nil
	case cur != nil && (cur.Labels[labelManagedBy] != managedByNodegress || isGatewayService(cur) && !madeBy(cur, w.ctrl)):
		return nil // someone else's, or another install's: the Gateway reports it
	case cur != nil && gatewayServiceCurrent(cur, want):
		return nil
	}
	opts := metav1.ApplyOptions{FieldManager: statusFieldManager, Force: true}
	_, err = api.Apply(ctx, gatewayServiceApply(want), opts)
	if err != nil && len(want.Spec.ExternalIPs) > 0 && externalIPsRefused(err) {
		// An API server with the DenyServiceExternalIPs admission plugin
		// (or a policy like it) refuses every Service with externalIPs:
		// the Service goes without them, so that a load balancer still
		// assigns the addresses the Gateway asks it for; the named ones
		// are served all the same. It carries the wanted hash, so that it
		// is not applied again until the Gateway changes.
		noIPs := want.DeepCopy()
		noIPs.Spec.ExternalIPs = nil
		if _, err2 := api.Apply(ctx, gatewayServiceApply(noIPs), opts); err2 != nil {
			return fmt.Errorf("apply service %s/%s without externalIPs (with them: %v): %w", ns, name, err, err2)
		}
		w.reportExternalIPsRefused(ns+"/"+name, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply service %s/%s: %w", ns, name, err)
	}
	w.mu.Lock()
	delete(w.externalIPsRefused, ns+"/"+name)
	w.mu.Unlock()
	w.log.Info("applied gateway service", "svc", ns+"/"+name)
	return nil
}

// externalIPsRefused reports whether the API server refused a Service
// for its externalIPs: an admission plugin forbids it, or validation
// names the field.
func externalIPsRefused(err error) bool {
	if apierrors.IsForbidden(err) {
		return true
	}
	var status apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	return slices.ContainsFunc(status.Status().Details.Causes, func(c metav1.StatusCause) bool {
		return strings.HasPrefix(c.Field, "spec.externalIPs")
	})
}

// reportExternalIPsRefused logs, once per Service, that it was applied
// without its externalIPs.
func (w *gatewayStatusWriter) reportExternalIPsRefused(key string, err error) {
	w.mu.Lock()
	seen := w.externalIPsRefused[key]
	w.externalIPsRefused[key] = true
	w.mu.Unlock()
	if !seen {
		w.log.Warn("the API server refuses the gateway service's externalIPs (DenyServiceExternalIPs?): applied without them; "+
			"the gateway's named addresses are served all the same", "svc", key, "err", err)
	}
}

// gatewayServiceApply is the apply configuration of a wanted Service.
func gatewayServiceApply(want *corev1.Service) *corev1ac.ServiceApplyConfiguration {
	spec := corev1ac.ServiceSpec().WithType(want.Spec.Type)
	if want.Spec.AllocateLoadBalancerNodePorts != nil {
		spec.WithAllocateLoadBalancerNodePorts(*want.Spec.AllocateLoadBalancerNodePorts)
	}
	if len(want.Spec.ExternalIPs) > 0 {
		spec.WithExternalIPs(want.Spec.ExternalIPs...)
	}
	for _, p := range want.Spec.Ports {
		spec.WithPorts(corev1ac.ServicePort().WithName(p.Name).WithProtocol(p.Protocol).WithPort(p.Port))
	}
	ac := corev1ac.Service(want.Name, want.Namespace).WithLabels(want.Labels).WithAnnotations(want.Annotations).WithSpec(spec)
	for _, o := range want.OwnerReferences {
		ref := metav1ac.OwnerReference().WithAPIVersion(o.APIVersion).WithKind(o.Kind).WithName(o.Name).WithUID(o.UID)
		if o.Controller != nil {
			ref.WithController(*o.Controller)
		}
		ac.WithOwnerReferences(ref)
	}
	return ac
}
