#!/usr/bin/env bash
# nodegress demo on the local cluster (`make demo-cluster`): the same story as
# `make demo`, on real kubelets and pods. A two-node cluster without
# kube-proxy, nodegress installed from manifests/ as its DaemonSet; a
# Deployment of three pods behind a NodePort and a LoadBalancer Service and
# two Ingresses (one over HTTPS). The client outside the cluster sends
# requests through node1; the pods answer with the client address they saw;
# then a live trace and the maps, read inside the agent's pod with kubectl
# exec. The cluster is removed on exit, also after a failure.
#
# Needs root. Builds what it needs the first time (scripts/cluster.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=lib/demo-ingresses.sh
. scripts/lib/demo-ingresses.sh
ROOT=$PWD
PODSERVER=${PODSERVER:-$ROOT/bin/podserver}

if [[ -t 1 ]]; then
	section() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	section() { printf '\n== %s\n' "$*"; }
fi
die() { echo "demo-cluster: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, mounts, cgroups)"
[[ -x $PODSERVER ]] || die "$PODSERVER missing; run 'make build' first"

NS=demo
NODE_PORT=30080
LB_NODE_PORT=30081
# A LoadBalancer IP outside every range of the cluster's address plan; the
# client routes it via node1, as an upstream router routes a cloud LB's
# address to a node.
LB_IP=10.214.0.10
APP_HOST=app.demo.test
SECURE_HOST=secure.demo.test
LEGACY_HOST=legacy.demo.test
WORK=$(mktemp -d /tmp/nodegress-demo-cluster.XXXXXX)
UP=

cleanup() {
	local rc=$?
	set +e
	section "cleanup"
	if [[ -n $UP ]]; then
		scripts/cluster.sh down
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section "cluster: two nodes with kubelet and containerd, no kube-proxy, nodegress from manifests/"
rc=0
scripts/cluster.sh status >/dev/null 2>&1 || rc=$?
[[ $rc -eq 3 ]] || die "a local cluster already runs (make cluster-down first)"
rc=0
NODES=2 KUBE_PROXY=off NODEGRESS=on scripts/cluster.sh up > >(sed 's/^/  /') 2>&1 || rc=$?
# 4: someone else's cluster came up meanwhile; it is not ours to remove.
[[ $rc -eq 4 ]] && die "a local cluster already runs (make cluster-down first)"
UP=1
[[ $rc -eq 0 ]] || die "cluster.sh up failed ($rc)"
eval "$(scripts/cluster.sh env)"
read -r NODE1_IP _ <<<"$NODE_IPS"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
show() {
	printf '  $ kubectl %s\n' "$*"
	k "$@" 2>&1 | sed 's/^/    /'
	return "${PIPESTATUS[0]}"
}
show get nodes -o wide
show -n nodegress get daemonset,pods -o wide

section "the app: a Deployment of three pods, a NodePort and a LoadBalancer Service, two Ingresses"
mkdir -p "$WORK/tls"
"$PODSERVER" gencert --out "$WORK/tls" "$SECURE_HOST" >/dev/null
cat >"$WORK/app.yaml" <<EOT
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: $NS
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.66.1
        imagePullPolicy: IfNotPresent
        args: [netexec, --http-port=8080]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
        # Keeps serving while its endpoint is withdrawn, as a Deployment
        # that wants rollouts without failed requests does.
        lifecycle:
          preStop:
            sleep: {seconds: 5}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: $NS
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: $NODE_PORT}
---
apiVersion: v1
kind: Service
metadata:
  name: web-lb
  namespace: $NS
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: $LB_NODE_PORT}
---
$(demo_ingresses "$NS")
EOT
show apply -f "$WORK/app.yaml"
show -n "$NS" create secret tls secure-tls --cert "$WORK/tls/tls.crt" --key "$WORK/tls/tls.key"
# No cloud here: publish web-lb's address as a cloud controller would.
k -n "$NS" patch service web-lb --subresource=status --type=merge \
	-p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$LB_IP\"}]}}}" >/dev/null
ip -n "$CLIENT_NETNS" route add "$LB_IP/32" via "$NODE1_IP"
echo "  web-lb's LoadBalancer IP $LB_IP set in its status; the client routes it via node1"
show -n "$NS" rollout status deployment/web --timeout=120s
show -n "$NS" get pods,endpointslices -o wide

get() { ip netns exec "$CLIENT_NETNS" curl -sS --max-time 2 "$@"; }
for _ in $(seq 100); do
	get "http://$NODE1_IP:$NODE_PORT/hostname" >/dev/null 2>&1 && break
	sleep 0.1
done

AGENT=$(k -n nodegress get pods -o wide --field-selector spec.nodeName=node1 -o jsonpath='{.items[0].metadata.name}')
k -n nodegress exec "$AGENT" -- /nodegress trace --socket /run/nodegress/trace.sock --duration 20s >"$WORK/trace.txt" 2>&1 &
TRACE=$!
sleep 1

section "client -> NodePort $NODE1_IP:$NODE_PORT (agnhost answers with its pod name and the client address it saw)"
for _ in 1 2 3 4 5 6; do
	printf '  %s  saw %s\n' "$(get "http://$NODE1_IP:$NODE_PORT/hostname")" \
		"$(get "http://$NODE1_IP:$NODE_PORT/clientip" | cut -d: -f1)"
done
echo "  pods on node1 see the client itself; pods on node2 see node1's address (SNAT)"

section "client -> LoadBalancer IP $LB_IP:80"
for _ in 1 2 3 4; do
	printf '  %s\n' "$(get "http://$LB_IP/hostname")"
done

section "client -> http://$APP_HOST/ and https://$SECURE_HOST/ (Ingress: node1's L7 proxy, straight to pod IPs)"
for _ in $(seq 100); do
	[[ $(get -o /dev/null -w '%{http_code}' --resolve "$SECURE_HOST:443:$NODE1_IP" --cacert "$WORK/tls/ca.crt" "https://$SECURE_HOST/hostname" 2>/dev/null) == 200 ]] && break
	sleep 0.1
done
for _ in 1 2; do
	printf '  http://%s/  -> %s\n' "$APP_HOST" "$(get --resolve "$APP_HOST:80:$NODE1_IP" "http://$APP_HOST/hostname")"
done
for _ in 1 2; do
	printf '  https://%s/ -> %s (%s)\n' "$SECURE_HOST" \
		"$(get --resolve "$SECURE_HOST:443:$NODE1_IP" --cacert "$WORK/tls/ca.crt" "https://$SECURE_HOST/hostname")" \
		"$(get -o /dev/null -w 'HTTP/%{http_version}, certificate verify result %{ssl_verify_result}' --resolve "$SECURE_HOST:443:$NODE1_IP" --cacert "$WORK/tls/ca.crt" "https://$SECURE_HOST/hostname")"
done
printf '  plain http://%s/login -> %s\n' "$SECURE_HOST" \
	"$(get -o /dev/null -w '%{http_code} %{redirect_url}' --resolve "$SECURE_HOST:80:$NODE1_IP" "http://$SECURE_HOST/login")"

section "kubectl get ingress (status written by the elected agent)"
for _ in $(seq 100); do
	[[ -n $(k -n "$NS" get ingress secure -o jsonpath='{.status.loadBalancer.ingress[*].ip}' 2>/dev/null) ]] && break
	sleep 0.2
done
show -n "$NS" get ingress

section "a rollout under load: kubectl rollout restart deployment/web while the client keeps connecting"
ok=0 failed=0
show -n "$NS" rollout restart deployment/web
k -n "$NS" rollout status deployment/web --timeout=120s >/dev/null 2>&1 &
ROLLOUT=$!
while kill -0 "$ROLLOUT" 2>/dev/null; do
	if get -o /dev/null "http://$NODE1_IP:$NODE_PORT/hostname" 2>/dev/null; then
		ok=$((ok + 1))
	else
		failed=$((failed + 1))
	fi
done
wait "$ROLLOUT" || true
echo "  $ok requests answered, $failed failed while the pods were replaced"

section "nodegress trace on node1 (kubectl exec into the agent's pod; first lines, then a remote flow)"
wait "$TRACE" 2>/dev/null || true
head -n 6 "$WORK/trace.txt" | sed 's/^/  /'
{ grep -m 4 -e fwd_remote -e reply_remote "$WORK/trace.txt" || echo "(none seen)"; } | sed 's/^/  /'

section "nodegress maps on node1"
k -n nodegress exec "$AGENT" -- /nodegress maps 2>&1 | head -n 30 | sed 's/^/  /'
