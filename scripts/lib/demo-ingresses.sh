# shellcheck shell=bash
# demo_ingresses NS prints the two Ingresses every demo serves: APP_HOST over
# HTTP and SECURE_HOST over HTTPS (certificate from the Secret secure-tls,
# plain HTTP redirected), both to the Service web in namespace NS. Sourced
# by scripts/demo.sh and scripts/demo-cluster.sh.
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
EOT
}
