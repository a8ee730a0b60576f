// Package controller is the only part of nodegress that knows Kubernetes.
// It watches Services, EndpointSlices, the agent's Node and, with L7 on,
// Ingresses, IngressClasses and TLS Secrets; it translates them into the
// datapath's loader.Service values and the L7 proxy's l7proxy.Config, and
// keeps both equal to them.
//
// Objects come either from an API server or, with a standalone directory,
// from YAML files loaded into an in-memory clientset; in both cases the same
// shared informers feed the same translation, so a feature that works in one
// mode works in the other. See standaloneSource for how files map to
// objects, including what happens to objects of a broken file (they keep
// their last good version).
//
// Translate (L4) and TranslateIngress (L7) are pure functions of the
// objects; the Controller adds the informers, change tracking and batching
// (at most one sync per MinSyncInterval, with retries on error) and
// logging. A sync translates only the Services whose objects changed
// (serviceState keeps the rest, and who owns each frontend) and hands the
// datapath only the difference, so its cost follows the size of the
// change; a full sync every few minutes backs that up.
//
// After every successful sync the controller also feeds the health servers
// of package healthcheck, which answer load balancers as kube-proxy would:
// the healthCheckNodePorts with their local endpoint counts, and the sync
// loop's progress and the Node's state behind /healthz (healthsync.go).
package controller
