package controller

import (
	"strings"
	"testing"
)

// TestTranslateRouteSessionPersistence: an HTTPRoute rule's
// sessionPersistence becomes the rule's cookie affinity; a kind the proxy
// does not do makes the rule answer 500.
func TestTranslateRouteSessionPersistence(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+httpGateway+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app, uid: route-uid}
spec:
  parentRefs: [{name: gw}]
  rules:
  - {sessionPersistence: {sessionName: shop, absoluteTimeout: 10m, cookieConfig: {lifetimeType: Permanent}}, backendRefs: [{name: web, port: 8080}]}
  - {backendRefs: [{name: web, port: 8080}]}
  - {sessionPersistence: {type: Header}, backendRefs: [{name: web, port: 8080}]}
`)
	cfg, _, _, errs := o.translate()
	rules := cfg.Listeners[0].Routes[0].Rules
	if a := rules[0].Affinity; a == nil || a.Name != "shop" || a.MaxAge != 600 || len(a.Key) == 0 {
		t.Errorf("affinity %+v", a)
	}
	if rules[1].Affinity != nil {
		t.Errorf("affinity without sessionPersistence: %+v", rules[1].Affinity)
	}
	if b := rules[2].Backends; len(b) != 1 || b[0].Upstream != "" {
		t.Errorf("header persistence: backends %+v, want the rule answering 500", b)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "Cookie only") {
		t.Errorf("errors %v", errs)
	}
}
