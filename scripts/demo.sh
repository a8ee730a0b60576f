#!/usr/bin/env bash
# nodegress demo: a client and two nodes on one switch, the agent on node1,
# two pods on node1 and one on node2. Sends requests through a NodePort and a
# LoadBalancer IP of node1 (the datapath forwards to node1's pods and, SNAT'd,
# to node2's), shows what the pods saw,
# then an Ingress with two hosts served by the node's L7 proxy, one of them
# over HTTPS with a certificate from a Secret, and a Gateway API HTTPRoute on
# a Gateway of its own address; a live trace of the datapath's
# decisions, one record per HTTP request joined with them, the proxy's
# access log, `nodegress explain` of a NodePort and of two routes, and the
# pinned maps. Everything it
# creates (namespaces, processes, pins, files) is removed on exit.
#
# When the Kubernetes control plane binaries are cached (`make kube-bins`),
# the agent follows a real kube-apiserver (with etcd) running in a namespace
# of its own, installed with the ServiceAccount and RBAC of manifests/, and
# the app arrives with `kubectl apply`; otherwise it reads the same objects
# from a directory of YAML (--standalone). NODEGRESS_DEMO=standalone forces
# the latter.
#
# Needs root, curl, and the binaries from `make build` (bin/nodegress,
# bin/podserver); podserver also generates the demo's certificate. With the
# control plane, the Go toolchain builds its small launcher
# (tests/cmd/democp).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=lib/demo-ingresses.sh
. scripts/lib/demo-ingresses.sh
NODEGRESS=${NODEGRESS:-$PWD/bin/nodegress}
PODSERVER=${PODSERVER:-$PWD/bin/podserver}

if [[ -t 1 ]]; then
	section() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	section() { printf '\n== %s\n' "$*"; }
fi
die() { echo "demo: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, XDP)"
for b in "$NODEGRESS" "$PODSERVER"; do
	[[ -x $b ]] || die "$b missing; run 'make build' first"
done
for tool in ip curl base64; do
	command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"
done

# Unique names, so a demo never touches anything it did not create.
SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
CLIENT=ngdemo-$SUFFIX-client
NODE=ngdemo-$SUFFIX-node1
NODE2=ngdemo-$SUFFIX-node2
SWITCH=ngdemo-$SUFFIX-sw
CP=ngdemo-$SUFFIX-cp
PODS=(web-1 web-2 web-3)
# The node each pod runs on (its namespace's, and its EndpointSlice nodeName).
POD_NODES=(node1 node1 node2)
CLIENT_IP=10.100.0.10
NODE_IP=10.100.0.1
NODE2_IP=10.100.0.2
POD_IPS=(10.244.1.10 10.244.1.11 10.244.2.10)
POD_GW=169.254.1.1
LB_IP=10.96.20.1
# The Gateway's own address; the client routes 10.96.0.0/16 to node1.
GW_IP=10.96.30.1
GW_HOST=gw.demo.test
NODE_PORT=30080
LB_NODE_PORT=30081
APP_HOST=app.demo.test
SECURE_HOST=secure.demo.test
LEGACY_HOST=legacy.demo.test
# The control plane's namespace hangs off node1 on a link of its own.
CP_NODE_IP=10.200.0.1
CP_IP=10.200.0.2
METRICS=127.0.0.1:9254
XDP_MODE=${DEMO_XDP_MODE:-auto}

WORK=$(mktemp -d /tmp/nodegress-demo.XXXXXX)
BPFFS=$WORK/bpffs
SOCK=$WORK/trace.sock
NAMESPACES=()
PIDS=()
AGENT_PID=
BPFFS_MOUNTED=
CP_PID=

# API server mode when the control plane binaries are cached.
KUBE_BINS=$(scripts/kube-bins.sh --check 2>/dev/null) || KUBE_BINS=
MODE=standalone
if [[ -n $KUBE_BINS && ${NODEGRESS_DEMO:-} != standalone ]]; then
	MODE=api
fi

cleanup() {
	local rc=$?
	set +e
	section "cleanup"
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	if [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
		kill -TERM "$AGENT_PID"
		for _ in $(seq 50); do
			kill -0 "$AGENT_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$AGENT_PID" 2>/dev/null
	fi
	if [[ -n $CP_PID ]] && kill -0 "$CP_PID" 2>/dev/null; then
		# democp stops kube-apiserver, then etcd.
		kill -TERM "$CP_PID"
		for _ in $(seq 300); do
			kill -0 "$CP_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$CP_PID" 2>/dev/null
	fi
	if [[ -n $BPFFS_MOUNTED ]]; then
		if ! out=$(ip netns exec "$NODE" "$NODEGRESS" cleanup --bpffs "$BPFFS" 2>&1); then
			echo "nodegress cleanup: $out"
		fi
	fi
	for ns in "${NAMESPACES[@]}"; do
		# Anything still running inside is ours: the namespaces are new.
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			kill -KILL "$pid" 2>/dev/null
		done
		ip netns del "$ns" 2>/dev/null
	done
	if [[ -n $BPFFS_MOUNTED ]]; then
		umount -l "$BPFFS" 2>/dev/null
	fi
	rm -rf "$WORK"
	echo "removed namespaces ${NAMESPACES[*]:-none}, processes and pins"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

new_ns() {
	ip netns add "$1"
	NAMESPACES+=("$1")
	ip -n "$1" link set lo up
	# New namespaces copy the host's rp_filter; pod replies would be dropped.
	in_ns "$1" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
	in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
}

section "topology"
new_ns "$CLIENT"
new_ns "$NODE"
new_ns "$NODE2"
new_ns "$SWITCH"
# One L2 segment, like a cluster network: a bridge with a port for the client
# and each node. Every veth keeps the kernel's default offloads.
ip -n "$SWITCH" link add br0 type bridge
ip -n "$SWITCH" link set br0 up
switch_port() { # port name, namespace, device in it, address
	ip -n "$SWITCH" link add name "$1" type veth peer name "$3" netns "$2"
	ip -n "$SWITCH" link set "$1" master br0
	ip -n "$SWITCH" link set "$1" up
	ip -n "$2" addr add "$4/24" dev "$3"
	ip -n "$2" link set "$3" up
	# A frame a node's XDP program sends with XDP_TX reaches the veth's
	# peer only if that peer runs an XDP program: with XDP forced on the
	# nodes' veths, the switch ports get a stub (in auto mode they need
	# none, and a stub would only cost the peer its GSO).
	if [[ $XDP_MODE == native || $XDP_MODE == generic ]]; then
		in_ns "$SWITCH" "$PODSERVER" xdp-pass "$1"
	fi
}
switch_port sw-client "$CLIENT" eth0 "$CLIENT_IP"
switch_port sw-node1 "$NODE" ext0 "$NODE_IP"
switch_port sw-node2 "$NODE2" ext0 "$NODE2_IP"
for ns in "$NODE" "$NODE2"; do
	in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1
done
ip -n "$NODE" route add 10.244.2.0/24 via "$NODE2_IP"
ip -n "$NODE2" route add 10.244.1.0/24 via "$NODE_IP"
ip -n "$CLIENT" route add 10.96.0.0/16 via "$NODE_IP"

for i in "${!PODS[@]}"; do
	pod=${PODS[$i]} ip4=${POD_IPS[$i]}
	ns=ngdemo-$SUFFIX-$pod host=$NODE
	[[ ${POD_NODES[$i]} == node2 ]] && host=$NODE2
	new_ns "$ns"
	ip -n "$host" link add name "v$pod" type veth peer name eth0 netns "$ns"
	ip -n "$host" link set "v$pod" up
	ip -n "$host" route add "$ip4/32" dev "v$pod"
	ip -n "$ns" addr add "$ip4/32" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add "$POD_GW" dev eth0 scope link
	ip -n "$ns" route add default via "$POD_GW" dev eth0
	mac=$(ip -n "$host" -br link show "v$pod" | awk '{print $3}')
	ip -n "$ns" neigh add "$POD_GW" lladdr "$mac" dev eth0 nud permanent
done
cat <<EOT
  client $CLIENT_IP  --+
  node1  $NODE_IP   --+-- switch (bridge)     node1 routes 10.244.2.0/24 via node2
  node2  $NODE2_IP   --+
  node1 --veth-- ${PODS[0]} ${POD_IPS[0]}, ${PODS[1]} ${POD_IPS[1]}
  node2 --veth-- ${PODS[2]} ${POD_IPS[2]}
EOT
if [[ $MODE == api ]]; then
	# The control plane's own link: the agent reaches the API server
	# there, not through ext0 where the datapath sits.
	new_ns "$CP"
	ip -n "$NODE" link add name cp0 type veth peer name eth0 netns "$CP"
	ip -n "$NODE" addr add "$CP_NODE_IP/24" dev cp0
	ip -n "$NODE" link set cp0 up
	ip -n "$CP" addr add "$CP_IP/24" dev eth0
	ip -n "$CP" link set eth0 up
	echo "  node1 cp0 $CP_NODE_IP --veth-- $CP_IP control plane"
fi
echo "  client routes 10.96.0.0/16 (LoadBalancer IPs) via node1"

section "pods"
for i in "${!PODS[@]}"; do
	pod=${PODS[$i]}
	in_ns "ngdemo-$SUFFIX-$pod" "$PODSERVER" --name "$pod" --http :8080 --udp :9090 >"$WORK/$pod.log" 2>&1 &
	PIDS+=($!)
	echo "  $pod: HTTP :8080, UDP :9090"
done

# standalone_setup writes the Node, Services, EndpointSlices, IngressClass,
# Secret and Ingresses into a directory the agent watches.
standalone_setup() {
	section "services (standalone YAML in $WORK/manifests)"
	mkdir -p "$WORK/manifests"
	endpoints() {
		for i in "${!PODS[@]}"; do
			cat <<EOT
- addresses: ["${POD_IPS[$i]}"]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: ${POD_NODES[$i]}
  targetRef: {kind: Pod, namespace: default, name: ${PODS[$i]}}
EOT
		done
	}
	slice() {
		cat <<EOT
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $1-1
  namespace: default
  labels:
    kubernetes.io/service-name: $1
addressType: IPv4
ports:
- {name: http, protocol: TCP, port: 8080}
endpoints:
$(endpoints)
EOT
	}
	cat >"$WORK/manifests/node.yaml" <<EOT
apiVersion: v1
kind: Node
metadata:
  name: node1
spec:
  podCIDR: 10.244.1.0/24
status:
  addresses:
  - {type: InternalIP, address: $NODE_IP}
EOT
	cat >"$WORK/manifests/web.yaml" <<EOT
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: $NODE_PORT}
---
$(slice web)
EOT
	cat >"$WORK/manifests/web-lb.yaml" <<EOT
apiVersion: v1
kind: Service
metadata:
  name: web-lb
  namespace: default
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: $LB_NODE_PORT}
status:
  loadBalancer:
    ingress:
    - ip: $LB_IP
---
$(slice web-lb)
EOT
	echo "  default/web     NodePort      $NODE_IP:$NODE_PORT -> ${PODS[*]}"
	echo "  default/web-lb  LoadBalancer  $LB_IP:80 -> ${PODS[*]}"

	section "ingress (IngressClass, Secret and two Ingresses in the same directory)"
	b64() { base64 -w0 <"$1"; }
	cat >"$WORK/manifests/ingress.yaml" <<EOT
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nodegress
spec:
  controller: nodegress.io/ingress-controller
---
apiVersion: v1
kind: Secret
metadata:
  name: secure-tls
  namespace: default
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$WORK/tls/tls.crt")
  tls.key: $(b64 "$WORK/tls/tls.key")
---
$(demo_ingresses default)
EOT
	echo "  http://$APP_HOST/      -> default/web (${PODS[*]})"
	echo "  https://$SECURE_HOST/  -> default/web, certificate from Secret default/secure-tls; plain HTTP redirected (ssl-redirect)"
	echo "  http://$LEGACY_HOST/shop/X -> default/web as /X: an Ingress written for ingress-nginx (use-regex, rewrite-target)"
	echo "  served by the agent's proxy on $NODE_IP:80 and :443, steered to it by sk_lookup"

	section "gateway api (GatewayClass, Gateway and HTTPRoute in the same directory)"
	{
		cat manifests/gateway-api/gatewayclass.yaml
		echo "---"
		demo_gateway default
	} >"$WORK/manifests/gateway.yaml"
	echo "  http://$GW_HOST/ on the Gateway's own address $GW_IP:80 -> default/web, by HTTPRoute default/web"
}

# start_agent runs the agent in node1's namespace with the source given
# (--standalone DIR or --kubeconfig FILE, plus their own flags) and waits
# until its trace socket and /readyz answer: the first full sync is done.
start_agent() {
	section "agent"
	mkdir -p "$BPFFS"
	# Pins live on a bpffs in this mount namespace, so `nodegress maps` and
	# `cleanup` (each in its own `ip netns exec`) see what the agent pinned.
	mount -t bpf bpf "$BPFFS"
	BPFFS_MOUNTED=1
	in_ns "$NODE" "$NODEGRESS" agent "$@" --devices ext0 --node-name node1 --xdp-mode "$XDP_MODE" \
		--bpffs "$BPFFS" --trace-socket "$SOCK" --access-log "$WORK/access.log" \
		--metrics-addr "$METRICS" >"$WORK/agent.log" 2>&1 &
	AGENT_PID=$!
	local ready=
	for _ in $(seq 150); do
		kill -0 "$AGENT_PID" 2>/dev/null || { cat "$WORK/agent.log"; die "agent exited"; }
		if [[ -S $SOCK ]] && in_ns "$NODE" curl -sf --max-time 1 "http://$METRICS/readyz" >/dev/null 2>&1; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[[ -n $ready ]] || { cat "$WORK/agent.log"; die "agent not ready after 15s"; }
	if ip -n "$NODE" link show ext0 | grep -q xdpgeneric; then
		echo "  XDP on ext0: generic (the driver has no native XDP)"
	elif ip -n "$NODE" link show ext0 | grep -q xdp; then
		echo "  XDP on ext0: native (--xdp-mode $XDP_MODE; frames with unfinished checksums go on to tc)"
	else
		echo "  XDP on ext0: none. ext0 is a veth, whose frames may carry unfinished (CHECKSUM_PARTIAL)"
		echo "  checksums: --xdp-mode auto translates in tc there, and runs XDP on hardware NICs"
		echo "  (DEMO_XDP_MODE=native runs XDP here too)"
	fi
	echo "  pid $AGENT_PID, log $WORK/agent.log; /readyz answers: first full sync done"
}

# kubectl as the cluster admin, from the control plane's namespace.
k() { in_ns "$CP" "$KUBE_BINS/kubectl" --kubeconfig "$ADMIN_KC" --cache-dir "$WORK/kubectl-cache" "$@"; }
# show prints a command the way a user would type it, then runs it.
show() {
	printf '  $ kubectl %s\n' "$*"
	k "$@" 2>&1 | sed 's/^/    /'
	return "${PIPESTATUS[0]}"
}

# api_setup starts etcd and kube-apiserver, installs nodegress's RBAC and
# IngressClass from manifests/, registers node1, starts the agent with the
# ServiceAccount's token and applies the app.
api_setup() {
	section "control plane (etcd + kube-apiserver from $KUBE_BINS)"
	local democp=$WORK/democp
	if [[ -n ${DEMOCP:-} ]]; then
		democp=$DEMOCP
	else
		command -v go >/dev/null || die "go not found: needed to build tests/cmd/democp (or set DEMOCP)"
		go build -o "$democp" ./tests/cmd/democp || die "build tests/cmd/democp"
	fi
	local began=$SECONDS
	"$democp" --dir "$WORK/cp" --netns "$CP" --listen "$CP_IP" >"$WORK/cp.out" 2>"$WORK/cp.log" &
	CP_PID=$!
	local ready=
	# Seconds when idle; a busy machine has needed 40.
	for _ in $(seq 1200); do
		ready=$(grep -m1 '^ready ' "$WORK/cp.out" 2>/dev/null || true)
		[[ -n $ready ]] && break
		kill -0 "$CP_PID" 2>/dev/null || { cat "$WORK/cp.log"; die "control plane exited"; }
		sleep 0.1
	done
	[[ -n $ready ]] || { cat "$WORK/cp.log"; die "control plane not ready after 120s"; }
	read -r _ API_URL ADMIN_KC CA_FILE <<<"$ready"
	echo "  kube-apiserver $API_URL ready in $((SECONDS - began))s, in namespace $CP (logs in $WORK/cp)"
	echo "  no controller-manager, scheduler or kubelet: objects are stored and watched as on a"
	echo "  cluster, but nothing reconciles them, so this demo writes what those would"

	section "install: Namespace, ServiceAccount, RBAC and IngressClass from manifests/"
	echo "  (the DaemonSet is left out: without a kubelet it would run nothing; the agent runs as a"
	echo "  process in node1's namespace, with the DaemonSet's ServiceAccount)"
	show apply -f manifests/namespace.yaml -f manifests/rbac.yaml -f manifests/ingressclass.yaml
	show auth can-i update ingresses --subresource=status --as=system:serviceaccount:nodegress:nodegress
	show auth can-i create services --as=system:serviceaccount:nodegress:nodegress || true

	# What kubelet would register: the Node and its InternalIP, which the
	# agent lists as the Ingresses' address.
	cat >"$WORK/node.yaml" <<EOT
apiVersion: v1
kind: Node
metadata:
  name: node1
  labels: {kubernetes.io/hostname: node1, kubernetes.io/os: linux}
spec:
  podCIDR: 10.244.1.0/24
EOT
	k apply -f "$WORK/node.yaml" >/dev/null
	k patch node node1 --subresource=status --type=merge \
		-p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$NODE_IP\"}]}}" >/dev/null
	echo "  registered Node node1 (InternalIP $NODE_IP), as kubelet would"

	# The agent authenticates with a token of the manifests' ServiceAccount:
	# it can do what rbac.yaml grants and nothing else.
	local token
	token=$(k -n nodegress create token nodegress --duration=2h)
	local kc=$WORK/agent.kubeconfig kubectl=$KUBE_BINS/kubectl
	"$kubectl" --kubeconfig "$kc" config set-cluster demo --server "$API_URL" \
		--certificate-authority "$CA_FILE" --embed-certs >/dev/null
	"$kubectl" --kubeconfig "$kc" config set-credentials nodegress --token "$token" >/dev/null
	"$kubectl" --kubeconfig "$kc" config set-context demo --cluster demo --user nodegress >/dev/null
	"$kubectl" --kubeconfig "$kc" config use-context demo >/dev/null
	section "install: the Gateway API's CRDs and GatewayClass from manifests/gateway-api"
	echo "  $ kubectl apply --server-side -k manifests/gateway-api/crds"
	k apply --server-side -k manifests/gateway-api/crds >/dev/null
	k wait --for=condition=Established --timeout=60s crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io >/dev/null
	show apply -f manifests/gateway-api/gatewayclass.yaml
	start_agent --kubeconfig "$kc" --election-namespace nodegress
	echo "  following $API_URL as system:serviceaccount:nodegress:nodegress"

	section "kubectl apply -f app.yaml (Services, EndpointSlices, Ingresses, a Gateway and an HTTPRoute; Secret from the certificate)"
	local eps
	eps=$(for i in "${!PODS[@]}"; do
		printf '%s\n' "- addresses: [\"${POD_IPS[$i]}\"]" \
			"  conditions: {ready: true, serving: true, terminating: false}" \
			"  nodeName: ${POD_NODES[$i]}" \
			"  targetRef: {kind: Pod, namespace: demo, name: ${PODS[$i]}}"
	done)
	cat >"$WORK/app.yaml" <<EOT
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: $NODE_PORT}
---
apiVersion: v1
kind: Service
metadata:
  name: web-lb
  namespace: demo
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: $LB_NODE_PORT}
---
# Without a controller-manager nothing turns the Services' selectors into
# endpoints: these are the EndpointSlices its EndpointSlice controller
# would write for the two pods.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, protocol: TCP, port: 8080}
endpoints:
$eps
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-lb-1
  namespace: demo
  labels: {kubernetes.io/service-name: web-lb}
addressType: IPv4
ports:
- {name: http, protocol: TCP, port: 8080}
endpoints:
$eps
---
$(demo_ingresses demo)
---
$(demo_gateway demo)
EOT
	show apply -f "$WORK/app.yaml"
	show -n demo create secret tls secure-tls --cert "$WORK/tls/tls.crt" --key "$WORK/tls/tls.key"
	# A cloud's load balancer controller would publish web-lb's address.
	k -n demo patch service web-lb --subresource=status --type=merge \
		-p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$LB_IP\"}]}}}" >/dev/null
	echo "  web-lb's LoadBalancer IP $LB_IP set in its status, as a cloud controller would"
	show -n demo get services,endpointslices
}

# A throw-away CA and a certificate it signed for the HTTPS host: the
# Secret holds the certificate and key, the client trusts the CA.
mkdir -p "$WORK/tls"
"$PODSERVER" gencert --out "$WORK/tls" "$SECURE_HOST"
if [[ $MODE == api ]]; then
	api_setup
else
	standalone_setup
	start_agent --standalone "$WORK/manifests"
fi

in_ns "$NODE" "$NODEGRESS" trace --socket "$SOCK" --duration 30s >"$WORK/trace.txt" 2>&1 &
PIDS+=($!)
# One record per HTTP request, joined with what the datapath did with its
# connections.
in_ns "$NODE" "$NODEGRESS" trace --socket "$SOCK" --requests --duration 30s >"$WORK/requests.txt" 2>&1 &
PIDS+=($!)
sleep 0.5

get() { in_ns "$CLIENT" "$PODSERVER" get --timeout 2s "http://$1/"; }
# The first request may race the agent's first sync.
for _ in $(seq 50); do
	get "$NODE_IP:$NODE_PORT" >/dev/null 2>&1 && break
	sleep 0.1
done

section "client -> NodePort $NODE_IP:$NODE_PORT (pods answer with the client IP they saw)"
echo "  node1's pods see the client itself; node2's pod sees node1's address (SNAT, so that"
echo "  its replies come back through node1 to be translated)"
for _ in 1 2 3 4 5 6; do
	printf '  %s\n' "$(get "$NODE_IP:$NODE_PORT" 2>&1)"
done

section "client -> LoadBalancer IP $LB_IP:80"
for _ in 1 2 3 4 5 6; do
	printf '  %s\n' "$(get "$LB_IP:80" 2>&1)"
done

# The client has no DNS: curl --resolve points the host names at the node.
app() { in_ns "$CLIENT" curl -sS --max-time 3 --resolve "$APP_HOST:80:$NODE_IP" "$@"; }
secure() {
	in_ns "$CLIENT" curl -sS --max-time 3 --resolve "$SECURE_HOST:80:$NODE_IP" \
		--resolve "$SECURE_HOST:443:$NODE_IP" --cacert "$WORK/tls/ca.crt" "$@"
}
# What a pod's JSON echo says about who it talked to.
seen() { grep -o -e '"pod":"[^"]*"' -e '"client":"[^"]*"' -e '"X-Forwarded-For":\["[^"]*"\]' -e '"X-Forwarded-Proto":\["[^"]*"\]' | tr '\n' ' '; }
for _ in $(seq 50); do
	[[ $(app -o /dev/null -w '%{http_code}' "http://$APP_HOST/" 2>/dev/null) == 200 ]] &&
		[[ $(secure -o /dev/null -w '%{http_code}' "https://$SECURE_HOST/" 2>/dev/null) == 200 ]] && break
	sleep 0.1
done

section "client -> http://$APP_HOST/ (Ingress, L7 proxy on node1:80)"
for _ in 1 2; do
	printf '  %s\n' "$(app "http://$APP_HOST/" 2>&1)"
done
echo "  the pods' TCP peer is the node's proxy; the client's address travels in X-Forwarded-For:"
for _ in 1 2; do
	printf '  %s\n' "$(app "http://$APP_HOST/headers" 2>&1 | seen)"
done

section "client -> https://$SECURE_HOST/ (TLS by SNI, verified against the demo CA)"
for _ in 1 2; do
	out=$(secure -w '\n%{http_version} %{ssl_verify_result}' "https://$SECURE_HOST/headers" 2>&1) || true
	body=$(head -n 1 <<<"$out") meta=$(tail -n 1 <<<"$out")
	printf '  HTTP/%s, certificate verify result %s: %s\n' "${meta% *}" "${meta#* }" "$(seen <<<"$body")"
done
printf '  plain http://%s/login: %s\n' "$SECURE_HOST" \
	"$(secure -o /dev/null -w '%{http_code} -> %{redirect_url}' "http://$SECURE_HOST/login" 2>&1)"

section "client -> http://$LEGACY_HOST/shop/headers (ingress-nginx's annotations: regex path, rewrite-target /\$2)"
printf '  the pod saw: %s\n' "$(in_ns "$CLIENT" curl -sS --max-time 3 --resolve "$LEGACY_HOST:80:$NODE_IP" \
	"http://$LEGACY_HOST/shop/headers" 2>&1 | grep -o -e '"pod":"[^"]*"' -e '"path":"[^"]*"' | tr '\n' ' ')"

# The Gateway API: the same Service through an HTTPRoute on the Gateway's
# own address (not the node's).
gw() { in_ns "$CLIENT" curl -sS --max-time 3 --resolve "$GW_HOST:80:$GW_IP" "$@"; }
for _ in $(seq 50); do
	[[ $(gw -o /dev/null -w '%{http_code}' "http://$GW_HOST/" 2>/dev/null) == 200 ]] && break
	sleep 0.1
done
section "client -> http://$GW_HOST/ (Gateway API: HTTPRoute on the Gateway's address $GW_IP:80)"
printf '  %s\n' "$(gw "http://$GW_HOST/" 2>&1)"
echo "  on /headers the route adds X-Gateway before the pod sees the request:"
printf '  %s\n' "$(gw "http://$GW_HOST/headers" 2>&1 | grep -o -e '"pod":"[^"]*"' -e '"X-Gateway":\["[^"]*"\]' | tr '\n' ' ')"
printf '  http://%s/ on the node address %s instead: %s (the Ingresses own the node'"'"'s :80)\n' "$GW_HOST" "$NODE_IP" \
	"$(in_ns "$CLIENT" curl -sS --max-time 3 -o /dev/null -w '%{http_code}' --resolve "$GW_HOST:80:$NODE_IP" "http://$GW_HOST/" 2>&1)"

if [[ $MODE == api ]]; then
	section "kubectl get gateway,httproute (status written by the elected agent)"
	for _ in $(seq 150); do
		[[ $(k -n demo get gateway demo -o jsonpath='{.status.conditions[?(@.type=="Programmed")].status}' 2>/dev/null) == True ]] && break
		sleep 0.1
	done
	show -n demo get gateway,httproute

	section "kubectl get ingress (status written by the elected agent: where the Ingresses are served)"
	for _ in $(seq 150); do
		[[ -n $(k -n demo get ingress secure -o jsonpath='{.status.loadBalancer.ingress[*].ip}' 2>/dev/null) ]] && break
		sleep 0.1
	done
	show -n demo get ingress

	section "a live change: kubectl apply an EndpointSlice with ${PODS[1]} alone"
	cat >"$WORK/web-1.yaml" <<EOT
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, protocol: TCP, port: 8080}
endpoints:
- addresses: ["${POD_IPS[1]}"]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node1
  targetRef: {kind: Pod, namespace: demo, name: ${PODS[1]}}
EOT
	show apply -f "$WORK/web-1.yaml"
	# Ten answers in a row from the remaining pod: the datapath has it.
	began=$(date +%s%N) run=0 took=
	for _ in $(seq 300); do
		if [[ $(get "$NODE_IP:$NODE_PORT" 2>/dev/null) == "pod=${PODS[1]} "* ]]; then
			run=$((run + 1))
			[[ -z $took ]] && took=$((($(date +%s%N) - began) / 1000000))
			[[ $run -ge 10 ]] && break
		else
			run=0 took=
		fi
	done
	echo "  NodePort $NODE_IP:$NODE_PORT answered only by ${PODS[1]} ${took:-?} ms after kubectl returned (new connections; established ones keep their pod)"
	for _ in 1 2 3; do
		printf '  %s
' "$(get "$NODE_IP:$NODE_PORT" 2>&1)"
	done
fi

section "proxy access log (last lines)"
sleep 0.3
tail -n 5 "$WORK/access.log" | sed 's/^/  /'

section "nodegress trace (first lines: one connection's packets, both directions)"
sleep 0.5
head -n 8 "$WORK/trace.txt" | sed 's/^/  /'
echo "  ... and a flow to ${PODS[2]} on node2, SNAT'd on the way out, translated back on return:"
{ grep -m 6 -e fwd_remote -e reply_remote "$WORK/trace.txt" || echo "(none seen)"; } | sed 's/^/  /'

section "nodegress trace --requests (one record per request: steering, route, pod, node, status)"
sleep 0.3
{ grep -m 3 -e "$APP_HOST" -e "$GW_HOST" "$WORK/requests.txt" || echo "(none seen)"; } | sed 's/^/  /'

section "nodegress explain $NODE_IP:$NODE_PORT --from $CLIENT_IP (what a new connection would get, and why)"
in_ns "$NODE" "$NODEGRESS" explain --socket "$WORK/explain.sock" --from "$CLIENT_IP" "$NODE_IP:$NODE_PORT" 2>&1 | head -n 20 | sed 's/^/  /'

section "nodegress explain $LEGACY_HOST/shop/headers and unknown.demo.test/ (the proxy's live route table)"
for target in "$LEGACY_HOST/shop/headers" unknown.demo.test/; do
	in_ns "$NODE" "$NODEGRESS" explain --socket "$WORK/explain.sock" "$target" 2>&1 | head -n 12 | sed 's/^/  /'
	echo
done

section "nodegress maps"
in_ns "$NODE" "$NODEGRESS" maps --bpffs "$BPFFS" 2>&1 | head -n 40 | sed 's/^/  /'

if [[ -z $KUBE_BINS ]]; then
	echo
	echo "demo: this was the standalone mode; run 'make kube-bins' once (builds a few minutes) for the same demo against a real kube-apiserver with kubectl"
fi
