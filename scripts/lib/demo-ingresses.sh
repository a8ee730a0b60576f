# shellcheck shell=bash
# demo_ingresses NS prints the Ingresses every demo serves: APP_HOST over
# HTTP, SECURE_HOST over HTTPS (certificate from the Secret secure-tls,
# plain HTTP redirected), and LEGACY_HOST as written for ingress-nginx
# (/shop/X rewritten to /X by its regex path's group), all to the Service
# web in namespace NS. Sourced by scripts/demo.sh and scripts/demo-cluster.sh.
demo_ingresses() {
	local ns=$1
	cat <<EOT
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  namespace: $ns
spec:
  ingressClassName: nodegress
  rules:
  - host: $APP_HOST
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
  namespace: $ns
  annotations:
    nodegress.io/ssl-redirect: "true"
spec:
  ingressClassName: nodegress
  tls:
  - hosts: [$SECURE_HOST]
    secretName: secure-tls
  rules:
  - host: $SECURE_HOST
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  namespace: $ns
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /\$2
spec:
  ingressClassName: nodegress
  rules:
  - host: $LEGACY_HOST
    http:
      paths:
      - {path: "/shop(/|\$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: web, port: {name: http}}}}
EOT
}

# demo_gateway NS prints a Gateway of its own address GW_IP with an HTTP
# listener and an HTTPRoute for GW_HOST to the Service web in namespace NS
# (a header added on /headers, so the pod shows the route's filter).
demo_gateway() {
	local ns=$1
	cat <<EOT
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: demo
  namespace: $ns
spec:
  gatewayClassName: nodegress
  addresses: [{type: IPAddress, value: $GW_IP}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: $ns
spec:
  parentRefs: [{name: demo}]
  hostnames: [$GW_HOST]
  rules:
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: X-Gateway, value: demo/web}]}}]
    backendRefs: [{name: web, port: 80}]
  - backendRefs: [{name: web, port: 80}]
EOT
}
