package harness

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/nodegress/nodegress/tests/netns"
)

// The descriptions that write standalone YAML (Service, Ingress, NodeYAML,
// TLSSecretYAML) also give the typed objects to create through an API
// server, so tests of both modes describe a cluster the same way. They are
// decoded strictly: a field the types do not know fails here.

// Objects returns the Service and its EndpointSlice.
func (s Service) Objects() (*corev1.Service, *discoveryv1.EndpointSlice, error) {
	svc, es := &corev1.Service{}, &discoveryv1.EndpointSlice{}
	if err := yaml.UnmarshalStrict([]byte(s.serviceYAML()), svc); err != nil {
		return nil, nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	if err := yaml.UnmarshalStrict([]byte(s.sliceYAML()), es); err != nil {
		return nil, nil, fmt.Errorf("endpointslice of %s: %w", s.Name, err)
	}
	return svc, es, nil
}

// Object returns the Ingress.
func (ing Ingress) Object() (*networkingv1.Ingress, error) {
	obj := &networkingv1.Ingress{}
	if err := yaml.UnmarshalStrict([]byte(ing.YAML()), obj); err != nil {
		return nil, fmt.Errorf("ingress %s: %w", ing.Name, err)
	}
	return obj, nil
}

// NodeObject returns the Node object of a topology node.
func NodeObject(n *netns.Node) (*corev1.Node, error) {
	obj := &corev1.Node{}
	if err := yaml.UnmarshalStrict([]byte(NodeYAML(n)), obj); err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	return obj, nil
}

// TLSSecretObject returns a kubernetes.io/tls Secret.
func TLSSecretObject(namespace, name string, certPEM, keyPEM []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
}

// IngressClassObject returns an IngressClass called name for controller.
func IngressClassObject(name, controller string) *networkingv1.IngressClass {
	return &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       networkingv1.IngressClassSpec{Controller: controller},
	}
}

// Apply creates obj through the API server, or replaces the existing
// object of that name with it, the way `kubectl apply` ends up: what the
// API server fills in and a client may not change (a Service's cluster IPs)
// is kept. Status the object carries (a Service's LoadBalancer IPs, a
// Node's addresses) is written through the status subresource, as the
// cloud controller or kubelet would. obj is one of *corev1.Namespace,
// *corev1.Node, *corev1.Service, *corev1.Secret,
// *discoveryv1.EndpointSlice, *networkingv1.Ingress and
// *networkingv1.IngressClass; it is not modified.
func Apply(ctx context.Context, c kubernetes.Interface, obj any) error {
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = c.CoreV1().Namespaces().Create(ctx, o.DeepCopy(), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	case *corev1.Node:
		err = applyNode(ctx, c, o.DeepCopy())
	case *corev1.Service:
		err = applyService(ctx, c, o.DeepCopy())
	case *corev1.Secret:
		api := c.CoreV1().Secrets(o.Namespace)
		err = upsert(ctx, o.DeepCopy(), api.Get, api.Create, api.Update)
	case *discoveryv1.EndpointSlice:
		api := c.DiscoveryV1().EndpointSlices(o.Namespace)
		err = upsert(ctx, o.DeepCopy(), api.Get, api.Create, api.Update)
	case *networkingv1.Ingress:
		api := c.NetworkingV1().Ingresses(o.Namespace)
		err = upsert(ctx, o.DeepCopy(), api.Get, api.Create, api.Update)
	case *networkingv1.IngressClass:
		api := c.NetworkingV1().IngressClasses()
		err = upsert(ctx, o.DeepCopy(), api.Get, api.Create, api.Update)
	default:
		return fmt.Errorf("apply: unsupported object %T", obj)
	}
	if err != nil {
		return fmt.Errorf("apply %T: %w", obj, err)
	}
	return nil
}

// object is what upsert needs of a typed object pointer.
type object[T any] interface {
	*T
	GetName() string
	SetResourceVersion(string)
	GetResourceVersion() string
}

// upsert creates o, or updates the existing object with o's content.
func upsert[T any, P object[T]](ctx context.Context, o P,
	get func(context.Context, string, metav1.GetOptions) (P, error),
	create func(context.Context, P, metav1.CreateOptions) (P, error),
	update func(context.Context, P, metav1.UpdateOptions) (P, error),
) error {
	cur, err := get(ctx, o.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = create(ctx, o, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	o.SetResourceVersion(cur.GetResourceVersion())
	_, err = update(ctx, o, metav1.UpdateOptions{})
	return err
}

func applyNode(ctx context.Context, c kubernetes.Interface, n *corev1.Node) error {
	api := c.CoreV1().Nodes()
	status := n.Status
	cur, err := api.Get(ctx, n.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = api.Create(ctx, n, metav1.CreateOptions{})
	case err == nil:
		n.ResourceVersion = cur.ResourceVersion
		cur, err = api.Update(ctx, n, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	// The API server drops the status of a created or updated Node:
	// kubelet reports it through the status subresource.
	cur.Status = status
	_, err = api.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}

func applyService(ctx context.Context, c kubernetes.Interface, s *corev1.Service) error {
	api := c.CoreV1().Services(s.Namespace)
	status := s.Status
	cur, err := api.Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = api.Create(ctx, s, metav1.CreateOptions{})
	case err == nil:
		s.ResourceVersion = cur.ResourceVersion
		s.Spec.ClusterIP, s.Spec.ClusterIPs = cur.Spec.ClusterIP, cur.Spec.ClusterIPs
		cur, err = api.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	if len(status.LoadBalancer.Ingress) == 0 && len(cur.Status.LoadBalancer.Ingress) == 0 {
		return nil
	}
	// Written by the cloud's load balancer controller on a real cluster.
	cur.Status = status
	_, err = api.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}
