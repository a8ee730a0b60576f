package harness

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// GatewayCRDs are the CustomResourceDefinitions of the Gateway API that
// nodegress reads; InstallGatewayAPI waits for them to be established.
var GatewayCRDs = []string{
	"crd/gatewayclasses.gateway.networking.k8s.io",
	"crd/gateways.gateway.networking.k8s.io",
	"crd/httproutes.gateway.networking.k8s.io",
	"crd/referencegrants.gateway.networking.k8s.io",
}

// InstallGatewayAPI installs the Gateway API's CRDs and nodegress's
// GatewayClass from manifests/gateway-api as the README documents, with
// kubectl (a control plane's Kubectl), and waits for the CRDs.
func InstallGatewayAPI(kubectl func(args ...string) ([]byte, error)) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "manifests", "gateway-api")
	steps := [][]string{
		{"apply", "--server-side", "-k", filepath.Join(dir, "crds")},
		append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, GatewayCRDs...),
		{"apply", "-f", filepath.Join(dir, "gatewayclass.yaml")},
	}
	for _, args := range steps {
		if out, err := kubectl(args...); err != nil {
			return fmt.Errorf("kubectl %v: %w\n%s", args, err, out)
		}
	}
	return nil
}

// GatewayClassName is the GatewayClass of manifests/gateway-api.
const GatewayClassName = "nodegress"

// HTTPGatewayObject is a Gateway of nodegress's class with one HTTP
// listener "http" on port 80 that admits routes of its own namespace.
func HTTPGatewayObject(namespace, name string) *gwapi.Gateway {
	return &gwapi.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: gwapi.GatewaySpec{
			GatewayClassName: GatewayClassName,
			Listeners: []gwapi.Listener{{
				Name: "http", Port: 80, Protocol: gwapi.HTTPProtocolType,
			}},
		},
	}
}

// HTTPRouteObject is an HTTPRoute attached to gateway (same namespace)
// for one hostname, every path, forwarding to port of backend.
func HTTPRouteObject(namespace, name, gateway, hostname, backend string, port int32) *gwapi.HTTPRoute {
	r := &gwapi.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	r.Spec.ParentRefs = []gwapi.ParentReference{{Name: gwapi.ObjectName(gateway)}}
	r.Spec.Hostnames = []gwapi.Hostname{gwapi.Hostname(hostname)}
	r.Spec.Rules = []gwapi.HTTPRouteRule{{BackendRefs: []gwapi.HTTPBackendRef{BackendRef(backend, port)}}}
	return r
}

// BackendRef is an HTTPRoute backendRef to port of a Service in the
// route's namespace.
func BackendRef(service string, port int32) gwapi.HTTPBackendRef {
	p := gwapi.PortNumber(port)
	return gwapi.HTTPBackendRef{BackendRef: gwapi.BackendRef{
		BackendObjectReference: gwapi.BackendObjectReference{Name: gwapi.ObjectName(service), Port: &p},
	}}
}

// PathPrefixMatch is an HTTPRoute match of a path prefix.
func PathPrefixMatch(prefix string) gwapi.HTTPRouteMatch {
	typ := gwapi.PathMatchPathPrefix
	return gwapi.HTTPRouteMatch{Path: &gwapi.HTTPPathMatch{Type: &typ, Value: &prefix}}
}

// CreateHTTPRoutes creates routes through the API server, at most parallel
// at a time, and returns the errors of those that failed (all of them are
// tried).
func CreateHTTPRoutes(ctx context.Context, gw gwclient.Interface, routes []*gwapi.HTTPRoute, parallel int) error {
	return forEach(ctx, len(routes), parallel, func(ctx context.Context, i int) error {
		r := routes[i]
		if _, err := gw.GatewayV1().HTTPRoutes(r.Namespace).Create(ctx, r, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create httproute %s/%s: %w", r.Namespace, r.Name, err)
		}
		return nil
	})
}

// forEach calls fn for 0..n-1 with at most parallel calls at a time and
// joins their errors (at most ten are kept, with the count of the rest).
func forEach(ctx context.Context, n, parallel int, fn func(ctx context.Context, i int) error) error {
	parallel = max(1, min(parallel, n))
	var (
		mu     sync.Mutex
		errs   []error
		failed int
		wg     sync.WaitGroup
	)
	next := make(chan int)
	for range parallel {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					failed++
					if len(errs) < 10 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if failed > len(errs) {
		errs = append(errs, fmt.Errorf("and %d more", failed-len(errs)))
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}
