#!/usr/bin/env bash
# A real multi-node Kubernetes cluster on one machine, for development and
# the tests in tests/cluster:
#
#   - a control plane (etcd, kube-apiserver, kube-controller-manager,
#     kube-scheduler) in its own network namespace;
#   - NODES nodes, each a network namespace with its own mount namespace
#     and cgroup subtree, running a real kubelet with its own containerd
#     (runc, CNI ptp/host-local/loopback) and, when KUBE_PROXY=on,
#     kube-proxy;
#   - with DNS=on, CoreDNS as the cluster DNS (Service kube-system/kube-dns
#     at a fixed ClusterIP, answering cluster.local only, no forwarding);
#   - a client namespace outside the cluster (the "internet");
#   - one L2 segment (a bridge in a "switch" namespace) joining the
#     control plane, the nodes' uplinks (eth0) and the client; every node's
#     pod CIDR is routed to that node's address, no overlay;
#   - nodegress installed as a user installs it: `kubectl apply -k` of
#     tests/cluster/overlay (NODEGRESS=off leaves it out).
#
# Kubernetes is built from Go modules by scripts/kube-bins.sh, the runtime
# comes from Debian packages, images are built locally (clusterkit image)
# and imported into every node's containerd: nothing is pulled at run time.
#
# Usage: scripts/cluster.sh up|down|env|status|install-nodegress
#   up      brings the cluster up (after a `down` of anything left over);
#           on failure it tears everything down again and exits non-zero;
#           it exits 4, touching nothing, when a cluster is already up
#   down    stops and removes everything `up` made, even a half-made
#           cluster; idempotent
#   env     prints shell assignments for driving the cluster:
#           eval "$(scripts/cluster.sh env)"; $KUBECTL get nodes;
#           ip netns exec "$CLIENT_NETNS" curl http://NODE_IP:PORT/
#   status  prints the nodes and the processes of the cluster; exits 3
#           when no cluster runs
#   install-nodegress  applies tests/cluster/overlay and waits for the
#           agents to be Ready on every node
#
# Environment (for up):
#   NODES=2               number of nodes
#   KUBE_PROXY=on|off     kube-proxy on every node (iptables mode); off
#                         (default) leaves Services to nodegress, which then
#                         replaces kube-proxy (tests/cluster/overlay)
#   NODEGRESS=on|off      install nodegress once the nodes are Ready
#   DNS=on|off            CoreDNS as the cluster DNS (kubelet's clusterDNS)
#   GATEWAY_CHANNEL=standard|experimental  the Gateway API CRDs installed:
#                         manifests/gateway-api/crds (standard, default), or
#                         the experimental channel of the same version
#   NODEGRESS_CLUSTER_STATE  state directory (default /var/lib/nodegress-cluster)
#
# Host settings are left alone: kubelet finds the kernel sysctls it wants
# in files bind-mounted over /proc/sys inside each node's mount namespace,
# kube-proxy is told not to touch conntrack limits, and every other sysctl
# written is per network namespace.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${NODEGRESS_CLUSTER_STATE:-/var/lib/nodegress-cluster}
CACHE=/var/cache/nodegress
# Every namespace, cgroup and host interface is named from this prefix, so
# `down` finds them without any state.
P=ngc
CGROUP_BASE=nodegress-cluster
KUBE_VERSION=v1.37.2
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.66.1
# The Gateway API conformance suite's backend, at the Gateway API version the
# project pins; its manifests name the same image under these tags.
GATEWAY_API_VERSION=v1.6.3
ECHO_BASIC_TAGS=(v1.5.1 v1.6.0-dev.2 v1.6.0-dev.3)
# The DNS tests' glibc client (test/utils/image/manifest.go at KUBE_VERSION).
GLIBC_DNS_IMAGE=registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1
NODEGRESS_IMAGE=ghcr.io/nodegress/nodegress:dev
# The tag kubeadm 1.37 deploys (and the Gateway API conformance manifests).
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:v1.12.2

# Address plan, clear of tests/netns (10.100.0.0/24, 10.244.0.0/16,
# 10.96.0.0/16), tests/kube (10.0.0.0/16, 10.123.0.0/24), the demo
# (10.200.0.0/24) and the host's own networks.
SEGMENT_PREFIX=10.211.0
SEGMENT_LEN=24
CP_IP=$SEGMENT_PREFIX.2
CLIENT_IP=$SEGMENT_PREFIX.200
node_ip() { echo "$SEGMENT_PREFIX.$((10 + $1))"; }
# The host reaches the API server over a point-to-point link of its own,
# so the host itself is not on the cluster's segment.
HOST_LINK_IP=10.211.255.1
HOST_LINK_CP_IP=10.211.255.2
CLUSTER_CIDR=10.212.0.0/16
pod_cidr() { echo "10.212.$1.0/24"; }
SERVICE_CIDR=10.213.0.0/16
# Gateway addresses (tests/cluster/overlay's GATEWAY_ADDRESS_POOL, and
# GATEWAY_ADDRESS_RANGES for spec.addresses), routed from the client and
# the control plane to node1 like a load balancer's.
GATEWAY_POOL=10.214.0.0/24
GATEWAY_STATIC=10.214.1.0/24
KUBERNETES_SVC_IP=10.213.0.1
# kube-dns, where kubeadm puts it (the tenth address of the range).
DNS_SVC_IP=10.213.0.10
CLUSTER_DOMAIN=cluster.local

# Bounds of the waits.
APISERVER_TIMEOUT=120
CONTAINERD_TIMEOUT=30
NODES_READY_TIMEOUT=120
NODEGRESS_TIMEOUT=180
DNS_TIMEOUT=120

log() { echo "cluster: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# --- helpers ---------------------------------------------------------------

# cgroup_mounts lists the mount points of the cgroup hierarchies (v1 and
# the unified v2 one), one a line.
cgroup_mounts() {
	awk '{ split($0, a, " - "); split(a[2], b, " "); split(a[1], c, " ");
	       if (b[1] == "cgroup" || b[1] == "cgroup2") print c[5] }' /proc/self/mountinfo
}

# make_cgroup creates REL (e.g. nodegress-cluster/node1) in every hierarchy;
# cpuset needs cpus and mems copied down before a task may join.
make_cgroup() {
	local rel=$1 m d part
	while read -r m; do
		d=$m
		for part in ${rel//\// }; do
			if [ ! -d "$d/$part" ]; then
				mkdir "$d/$part"
				if [ -f "$d/cpuset.cpus" ]; then
					cat "$d/cpuset.cpus" >"$d/$part/cpuset.cpus"
					cat "$d/cpuset.mems" >"$d/$part/cpuset.mems"
				fi
			fi
			d=$d/$part
		done
	done < <(cgroup_mounts)
}

# join_cgroup moves PID into REL in every hierarchy.
join_cgroup() {
	local rel=$1 pid=$2 m
	while read -r m; do
		echo "$pid" >"$m/$rel/cgroup.procs"
	done < <(cgroup_mounts)
}

# launch NAME CGROUP CMD... starts CMD in the background in its own session
# and in cgroup CGROUP, logging to $STATE/log/NAME.log, and records its pid.
# The pid is CMD's own: the subshell joins the cgroup and execs.
launch() {
	local name=$1 cg=$2
	shift 2
	(
		join_cgroup "$cg" "$BASHPID"
		# Not the lock's descriptor: daemons must not hold it.
		exec 8>&-
		exec setsid "$@" </dev/null >>"$STATE/log/$name.log" 2>&1
	) &
	echo $! >"$STATE/pids/$name"
}

# wait_for DESCRIPTION SECONDS CMD... runs CMD every half second until it
# succeeds, at most SECONDS long.
wait_for() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 2; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	log "timed out after ${secs}s waiting for $what"
	return 1
}

in_ns() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

# --- images ------------------------------------------------------------------

KUBE_BIN=
CLUSTERKIT=

build_tools() {
	"$ROOT/scripts/install-cluster-deps.sh"
	if [ "$DNS" = on ]; then
		KUBE_BIN=$("$ROOT/scripts/kube-bins.sh" --coredns)
	else
		KUBE_BIN=$("$ROOT/scripts/kube-bins.sh")
	fi
	mkdir -p "$CACHE/bin"
	CLUSTERKIT=$CACHE/bin/clusterkit
	(cd "$ROOT" && go build -o "$CLUSTERKIT.tmp" ./tests/cmd/clusterkit && mv -f "$CLUSTERKIT.tmp" "$CLUSTERKIT")
}

# image_from_spec NAME SPEC ARGS... builds the image described by SPEC
# (clusterkit's spec format) into the cache, keyed by the spec, the content
# of every file it copies and the image arguments, and prints its path.
image_from_spec() {
	local name=$1 spec=$2 key out
	shift 2
	key=$({
		cat "$spec"
		printf '%s\n' "$@"
		awk '$1 == "file" { print $2 }' "$spec" | sort -u | xargs -r sha256sum
	} | sha256sum | cut -c1-16)
	out=$CACHE/images/$name-$key.tar
	if [ ! -f "$out" ]; then
		mkdir -p "$CACHE/images"
		"$CLUSTERKIT" image --out "$out" --spec "$spec" "$@"
		# Older builds of the same image are of no more use.
		find "$CACHE/images" -name "$name-*.tar" ! -path "$out" -delete
	fi
	echo "$out"
}

# libs_spec FILE... prints spec lines for the shared libraries FILEs need
# (and the dynamic loader), at the paths the loader looks them up.
libs_spec() {
	ldd "$@" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }' | sort -u |
		while read -r lib; do echo "file $lib $lib"; done
}

build_images() {
	local work=$STATE/images src
	mkdir -p "$work"

	# pause: the Kubernetes pause binary, built as its Makefile does.
	src=$(cd "$work" && GOFLAGS=-mod=mod GOWORK=off GOSUMDB=off \
		go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -f "$src/build/pause/linux/pause.c" ] || die "pause.c not found in k8s.io/kubernetes@$KUBE_VERSION"
	mkdir -p "$CACHE/pause"
	if [ ! -x "$CACHE/pause/pause-3.10.2" ]; then
		gcc -Os -Wall -Werror -static -DVERSION=v3.10.2-nodegress \
			-o "$CACHE/pause/pause-3.10.2.tmp" "$src/build/pause/linux/pause.c"
		mv -f "$CACHE/pause/pause-3.10.2.tmp" "$CACHE/pause/pause-3.10.2"
	fi
	echo "file $CACHE/pause/pause-3.10.2 /pause" >"$work/pause.spec"
	PAUSE_TAR=$(image_from_spec pause "$work/pause.spec" --tag "$PAUSE_IMAGE" \
		--entrypoint '["/pause"]' --user 65535:65535)

	# agnhost: the binary from k8s.io/kubernetes, plus what e2e tests run
	# inside it: a shell, the usual tools (busybox), curl, wget, nc.
	{
		echo "file $KUBE_BIN/agnhost /agnhost"
		echo "file /bin/busybox /bin/busybox"
		/bin/busybox --list-full | grep -v -E '^(bin/busybox|bin/sh|usr/bin/nc|usr/bin/wget)$' |
			while read -r applet; do echo "link /bin/busybox /$applet"; done
		# Not busybox for these: its wget crashes (SIGSEGV) when given -T,
		# its nc lacks -z and -v, and its sh runs its own applets ahead
		# of PATH. e2e tests use all three; agnhost's image (Alpine) has
		# GNU wget, OpenBSD nc and bash too.
		echo "file /bin/dash /bin/sh"
		echo "file /bin/bash /bin/bash"
		echo "file /usr/bin/wget /usr/bin/wget"
		echo "file /bin/nc.openbsd /usr/bin/nc"
		echo "file /usr/bin/curl /usr/bin/curl"
		# The DNS tests query with dig.
		echo "file /usr/bin/dig /usr/bin/dig"
		libs_spec /bin/dash /bin/bash /usr/bin/wget /bin/nc.openbsd /usr/bin/curl /usr/bin/dig
		if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
			echo "file /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"
		fi
		echo "dir /tmp"
		echo "dir /etc"
	} >"$work/agnhost.spec"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/group"
	echo "hosts: files dns" >"$work/nsswitch.conf"
	{
		echo "file $work/passwd /etc/passwd"
		echo "file $work/group /etc/group"
		echo "file $work/nsswitch.conf /etc/nsswitch.conf"
	} >>"$work/agnhost.spec"
	AGNHOST_TAR=$(image_from_spec agnhost "$work/agnhost.spec" --tag "$AGNHOST_IMAGE" \
		--entrypoint '["/agnhost"]' --cmd '["pause"]')
	# glibc-dns-testing: a glibc userland with dig, for the DNS tests'
	# second client (the first is agnhost, musl upstream). The same
	# tools as agnhost's, without agnhost.
	grep -v ' /agnhost$' "$work/agnhost.spec" >"$work/glibc-dns.spec"
	GLIBC_DNS_TAR=$(image_from_spec glibc-dns "$work/glibc-dns.spec" --tag "$GLIBC_DNS_IMAGE" \
		--cmd '["/bin/sh"]')

	# CoreDNS: the binary alone, run as root so that it binds :53.
	if [ "$DNS" = on ]; then
		echo "file $KUBE_BIN/coredns /coredns" >"$work/coredns.spec"
		echo "dir /etc/coredns" >>"$work/coredns.spec"
		COREDNS_TAR=$(image_from_spec coredns "$work/coredns.spec" --tag "$COREDNS_IMAGE" \
			--entrypoint '["/coredns"]')
	fi

	# echo-basic: the Gateway API conformance backend, built from its module
	# (a module of our own requires both gateway-api modules: the conformance
	# module's own replace of the root module does not apply from the proxy).
	local echo=$CACHE/echo-basic/echo-basic-$GATEWAY_API_VERSION tag tags=()
	if [ ! -x "$echo" ]; then
		mkdir -p "$CACHE/echo-basic/build"
		(
			cd "$CACHE/echo-basic/build"
			printf 'module echobasicbuild\n\ngo 1.26\n' >go.mod
			export GOSUMDB=off GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
			go get "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
				"sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION" >&2
			go build -trimpath -ldflags "-s -w" -o "$echo.tmp" sigs.k8s.io/gateway-api/conformance/echo-basic
		)
		mv -f "$echo.tmp" "$echo"
	fi
	echo "file $echo /echo-basic" >"$work/echo-basic.spec"
	for tag in "${ECHO_BASIC_TAGS[@]}"; do
		tags+=(--tag "registry.k8s.io/gateway-api/echo-basic:$tag")
	done
	ECHO_BASIC_TAR=$(image_from_spec echo-basic "$work/echo-basic.spec" "${tags[@]}" \
		--entrypoint '["/echo-basic"]' --user 65532:65532)

	# nodegress: the Dockerfile's recipe (a static binary on an empty base).
	(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=dev" \
		-o "$work/nodegress" ./cmd/nodegress)
	echo "file $work/nodegress /nodegress" >"$work/nodegress.spec"
	NODEGRESS_TAR=$(image_from_spec nodegress "$work/nodegress.spec" --tag "$NODEGRESS_IMAGE" \
		--entrypoint '["/nodegress"]')
}

# --- network -----------------------------------------------------------------

# link_to_switch NS DEV SWITCH_PORT ADDR/LEN puts a veth between NS (named
# DEV there) and the switch's bridge (port SWITCH_PORT).
link_to_switch() {
	local ns=$1 dev=$2 port=$3 addr=$4
	ip link add "$port" netns "$P-sw" type veth peer name "$dev" netns "$ns"
	ip -n "$P-sw" link set "$port" master br0 up
	ip -n "$ns" addr add "$addr" dev "$dev"
	ip -n "$ns" link set "$dev" up
}

setup_network() {
	local i j ns
	ip netns add "$P-sw"
	ip netns add "$P-cp"
	ip netns add "$P-client"
	for ((i = 1; i <= NODES; i++)); do
		ip netns add "$P-node$i"
	done
	ip -n "$P-sw" link add br0 type bridge
	ip -n "$P-sw" link set br0 up
	for ns in "$P-sw" "$P-cp" "$P-client" $(node_netns_list); do
		ip -n "$ns" link set lo up
	done

	link_to_switch "$P-cp" eth0 cp "$CP_IP/$SEGMENT_LEN"
	link_to_switch "$P-client" eth0 client "$CLIENT_IP/$SEGMENT_LEN"
	for ((i = 1; i <= NODES; i++)); do
		link_to_switch "$P-node$i" eth0 "node$i" "$(node_ip "$i")/$SEGMENT_LEN"
		# The way out is the client's side, as a node's default gateway
		# leads to the outside world. Connections from the node to
		# Service IPs need a route before kube-proxy's DNAT rewrites them.
		ip -n "$P-node$i" route add default via "$CLIENT_IP"
		# Nodes route their pods' traffic.
		in_ns "$P-node$i" sysctl -qw net.ipv4.ip_forward=1
		# Service traffic between pods of one node's bridge goes through
		# kube-proxy's rules (per network namespace on this kernel).
		in_ns "$P-node$i" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
		# A frame a node's XDP program sends (XDP_TX, redirect) into its
		# uplink is only received by the switch side if that side has an
		# XDP program too, as a real switch port would just take it.
		in_ns "$P-sw" "$CLUSTERKIT" xdp-pass "node$i"
	done

	# The host's own link to the control plane, for kubectl.
	ip link add "$P-host" type veth peer name host0 netns "$P-cp"
	ip addr add "$HOST_LINK_IP/30" dev "$P-host"
	ip link set "$P-host" up
	ip -n "$P-cp" addr add "$HOST_LINK_CP_IP/30" dev host0
	ip -n "$P-cp" link set host0 up

	# Every pod CIDR is routed to its node, from the control plane, the
	# client and the other nodes.
	for ((j = 1; j <= NODES; j++)); do
		ip -n "$P-cp" route add "$(pod_cidr "$j")" via "$(node_ip "$j")"
		ip -n "$P-client" route add "$(pod_cidr "$j")" via "$(node_ip "$j")"
		for ((i = 1; i <= NODES; i++)); do
			[ "$i" = "$j" ] && continue
			ip -n "$P-node$i" route add "$(pod_cidr "$j")" via "$(node_ip "$j")"
		done
		# A node routes each of its own pods through the pod's veth
		# (CNI ptp); the rest of its range goes nowhere.
		ip -n "$P-node$j" route add unreachable "$(pod_cidr "$j")"
	done
	local prefix
	for prefix in "$GATEWAY_POOL" "$GATEWAY_STATIC"; do
		ip -n "$P-client" route add "$prefix" via "$(node_ip 1)"
		ip -n "$P-cp" route add "$prefix" via "$(node_ip 1)"
	done
}

node_netns_list() {
	local i
	for ((i = 1; i <= NODES; i++)); do echo "$P-node$i"; done
}

# --- control plane -------------------------------------------------------------

start_control_plane() {
	local pki=$STATE/pki cp=$STATE/cp nodes="" i
	for ((i = 1; i <= NODES; i++)); do nodes+="${nodes:+,}node$i"; done
	"$CLUSTERKIT" pki --dir "$pki" --ips "$CP_IP,$HOST_LINK_CP_IP,$KUBERNETES_SVC_IP,127.0.0.1" \
		--server "https://$CP_IP:6443" --admin-server "https://$HOST_LINK_CP_IP:6443" --nodes "$nodes"
	mkdir -p "$cp"
	make_cgroup "$CGROUP_BASE/cp"
	local net=(nsenter "--net=/run/netns/$P-cp" --)

	launch etcd "$CGROUP_BASE/cp" "${net[@]}" "$KUBE_BIN/etcd" \
		--name=default --data-dir="$cp/etcd" \
		--listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
		--listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
		--initial-cluster=default=http://127.0.0.1:2380 \
		--unsafe-no-fsync=true --log-level=warn

	launch kube-apiserver "$CGROUP_BASE/cp" "${net[@]}" "$KUBE_BIN/kube-apiserver" \
		--etcd-servers=http://127.0.0.1:2379 \
		--bind-address=0.0.0.0 --advertise-address="$CP_IP" --secure-port=6443 \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$pki/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=InternalIP \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--allow-privileged=true --profiling=false \
		--cert-dir="$cp/apiserver-certs" \
		--shutdown-watch-termination-grace-period=1s
}

kubectl_() { "$KUBE_BIN/kubectl" --kubeconfig "$STATE/pki/admin.kubeconfig" --request-timeout=10s "$@"; }

apiserver_ready() { [ "$(kubectl_ get --raw /readyz 2>/dev/null)" = ok ]; }

# register_nodes creates the Node objects with their pod CIDRs before the
# kubelets start: each kubelet adopts its Node, and every node's pod range
# is known up front (CNI configuration, routes), as with a CNI plugin that
# assigns them.
register_nodes() {
	local i
	for ((i = 1; i <= NODES; i++)); do
		cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: node$i
  labels:
    kubernetes.io/hostname: node$i
    kubernetes.io/os: linux
spec:
  podCIDR: $(pod_cidr "$i")
  podCIDRs: [$(pod_cidr "$i")]
EOF
	done | kubectl_ apply -f - >/dev/null
}

start_controllers() {
	local pki=$STATE/pki net=(nsenter "--net=/run/netns/$P-cp" --)
	launch kube-controller-manager "$CGROUP_BASE/cp" "${net[@]}" "$KUBE_BIN/kube-controller-manager" \
		--kubeconfig="$pki/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$pki/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$pki/controller-manager.kubeconfig" \
		--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
		--use-service-account-credentials=true \
		--cluster-cidr="$CLUSTER_CIDR" --allocate-node-cidrs=false \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--leader-elect=false --bind-address=127.0.0.1 --profiling=false
	launch kube-scheduler "$CGROUP_BASE/cp" "${net[@]}" "$KUBE_BIN/kube-scheduler" \
		--kubeconfig="$pki/scheduler.kubeconfig" \
		--authentication-kubeconfig="$pki/scheduler.kubeconfig" \
		--authorization-kubeconfig="$pki/scheduler.kubeconfig" \
		--leader-elect=false --bind-address=127.0.0.1 --profiling=false
}

# --- nodes -------------------------------------------------------------------

# The kernel sysctls kubelet sets at start, with the values it wants. Inside
# a node's mount namespace, files holding these values are bind-mounted over
# the /proc/sys entries: kubelet reads what it wants and writes nothing, and
# the host's values stay as they are.
KUBELET_SYSCTLS=(
	vm/overcommit_memory=1
	vm/panic_on_oom=0
	kernel/panic=10
	kernel/panic_on_oops=1
	kernel/keys/root_maxkeys=1000000
	kernel/keys/root_maxbytes=25000000
)

node_dir() { echo "$STATE/nodes/node$1"; }

# write_node_config writes containerd's, the CNI's and kubelet's
# configuration of node I.
write_node_config() {
	local i=$1 nd
	nd=$(node_dir "$i")
	mkdir -p "$nd"/{containerd,cni/net.d,cni/ipam,kubelet,sysctl}
	cat >"$nd/containerd.toml" <<EOF
version = 2
root = "$nd/containerd/root"
state = "$nd/containerd/state"
# Only what the CRI needs; the others would look for hardware or defaults.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$nd/containerd.sock"
[ttrpc]
  address = "$nd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$nd/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj below the
  # caller's, and every sandbox would fail.
  restrict_oom_score_adj = true
  # Sandboxes' network namespaces under the node's state, not /run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni/net.d"
EOF
	cat >"$nd/cni/net.d/10-ngc.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "nodegress-cluster",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$(pod_cidr "$i")"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$nd/cni/ipam"
      }
    }
  ]
}
EOF
	cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 (hybrid); kubelet 1.37 refuses it otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_BASE/node$i
containerRuntimeEndpoint: unix://$nd/containerd.sock
address: $(node_ip "$i")
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $STATE/pki/ca.crt
authorization:
  mode: Webhook
clusterDomain: $CLUSTER_DOMAIN
$([ "$DNS" = on ] && echo "clusterDNS: [$DNS_SVC_IP]")
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
# Images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
nodeStatusReportFrequency: 10s
EOF
	local s
	for s in "${KUBELET_SYSCTLS[@]}"; do
		echo "${s#*=}" >"$nd/sysctl/$(echo "${s%%=*}" | tr / .)"
	done
}

# node_mount_ns creates node I's mount namespace, kept by a bind mount of
# its nsfs file, with what must be the node's own: /run (containerd's and
# runc's runtime state, /run/nodegress, iptables' lock), /var/log (pod logs,
# /var/log/containers), kubelet's device plugin directory, a bpffs at
# /sys/fs/bpf and kubelet's sysctls. All
# of it is made shared inside the namespace (a new peer group, private to
# the node), which mountPropagation: Bidirectional needs.
node_mount_ns() {
	local i=$1 nd f s mounts
	nd=$(node_dir "$i")
	f=$STATE/ns/node$i
	touch "$f"
	# kubelet binds its device plugin socket at a fixed path, whatever its
	# --root-dir: kubelets starting together on one machine race for it
	# ("bind: address already in use") unless each node has its own.
	mkdir -p /var/lib/kubelet/device-plugins
	mounts="mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/log
mount -t tmpfs -o mode=0755 tmpfs /var/lib/kubelet/device-plugins
mount -t bpf bpf /sys/fs/bpf"
	for s in "${KUBELET_SYSCTLS[@]}"; do
		mounts+="
mount --bind $nd/sysctl/$(echo "${s%%=*}" | tr / .) /proc/sys/${s%%=*}"
	done
	mounts+="
mount --make-rshared /"
	unshare --mount="$f" --propagation private sh -ec "$mounts"
}

node_exec() {
	local i=$1
	shift
	nsenter --mount="$STATE/ns/node$i" --net="/run/netns/$P-node$i" -- "$@"
}

start_containerd() {
	local i=$1
	make_cgroup "$CGROUP_BASE/node$i"
	launch "containerd-node$i" "$CGROUP_BASE/node$i" \
		nsenter --mount="$STATE/ns/node$i" --net="/run/netns/$P-node$i" -- \
		containerd --config "$(node_dir "$i")/containerd.toml"
}

ctr_() {
	local i=$1
	shift
	ctr --address "$(node_dir "$i")/containerd.sock" --namespace k8s.io "$@"
}

import_images() {
	local i=$1 tar
	wait_for "containerd of node$i" "$CONTAINERD_TIMEOUT" ctr_ "$i" version || return 1
	for tar in "$PAUSE_TAR" "$AGNHOST_TAR" "$ECHO_BASIC_TAR" "$GLIBC_DNS_TAR" "$NODEGRESS_TAR" ${COREDNS_TAR:+"$COREDNS_TAR"}; do
		ctr_ "$i" images import "$tar" >/dev/null
	done
}

start_kubelet() {
	local i=$1 nd
	nd=$(node_dir "$i")
	launch "kubelet-node$i" "$CGROUP_BASE/node$i" \
		nsenter --mount="$STATE/ns/node$i" --net="/run/netns/$P-node$i" -- \
		"$KUBE_BIN/kubelet" --config="$nd/kubelet.yaml" \
		--kubeconfig="$STATE/pki/node$i.kubeconfig" \
		--root-dir="$nd/kubelet" --cert-dir="$nd/kubelet/pki" \
		--hostname-override="node$i" --node-ip="$(node_ip "$i")" --v=1
}

start_kube_proxy() {
	local i=$1
	launch "kube-proxy-node$i" "$CGROUP_BASE/node$i" \
		nsenter --mount="$STATE/ns/node$i" --net="/run/netns/$P-node$i" -- \
		"$KUBE_BIN/kube-proxy" --kubeconfig="$STATE/pki/kube-proxy.kubeconfig" \
		--hostname-override="node$i" --proxy-mode=iptables \
		--cluster-cidr="$CLUSTER_CIDR" \
		--nodeport-addresses="$SEGMENT_PREFIX.0/$SEGMENT_LEN" \
		--conntrack-max-per-core=0 \
		--conntrack-tcp-timeout-established=0s --conntrack-tcp-timeout-close-wait=0s \
		--metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --v=1
}

nodes_ready() {
	local n
	n=$(kubectl_ get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
	[ "$n" -eq "$NODES" ]
}

# --- DNS ---------------------------------------------------------------------

# install_dns deploys CoreDNS as kubeadm does (ServiceAccount, RBAC, the
# Corefile, a Deployment, the kube-dns Service at DNS_SVC_IP), answering
# only CLUSTER_DOMAIN and the reverse zones: nothing is forwarded (there is
# no upstream to forward to). CoreDNS reaches the API server at its own
# address, not through the kubernetes Service, so that it works the same
# with and without kube-proxy; pods reach CoreDNS through the kube-dns
# ClusterIP, which only kube-proxy (or its replacement) translates.
install_dns() {
	local start=$SECONDS
	log "installing CoreDNS (kube-system/kube-dns at $DNS_SVC_IP)"
	cat <<EOF | kubectl_ apply -f - >/dev/null
apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        env:
        - name: KUBERNETES_SERVICE_HOST
          value: "$CP_IP"
        - name: KUBERNETES_SERVICE_PORT
          value: "6443"
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/name: CoreDNS
spec:
  selector:
    k8s-app: kube-dns
  clusterIP: $DNS_SVC_IP
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
	wait_for "CoreDNS Ready" "$DNS_TIMEOUT" dns_ready
	log "CoreDNS Ready in $((SECONDS - start))s"
}

dns_ready() {
	[ "$(kubectl_ -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}')" = 1 ]
}

# --- nodegress ---------------------------------------------------------------

install_gateway_api() {
	local crds=$ROOT/manifests/gateway-api/crds
	if [ "${GATEWAY_CHANNEL:-standard}" = experimental ]; then
		crds=$(cd "$ROOT" && go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/experimental
	fi
	kubectl_ apply --server-side -k "$crds" >/dev/null
	kubectl_ wait --for=condition=Established --timeout=60s \
		crd/gatewayclasses.gateway.networking.k8s.io crd/gateways.gateway.networking.k8s.io \
		crd/httproutes.gateway.networking.k8s.io crd/referencegrants.gateway.networking.k8s.io >/dev/null
	kubectl_ apply -f "$ROOT/manifests/gateway-api/gatewayclass.yaml" >/dev/null
	log "gateway api CRDs (${GATEWAY_CHANNEL:-standard} channel) and GatewayClass installed"
}

install_nodegress() {
	local start=$SECONDS overlay=tests/cluster/overlay
	# Without kube-proxy nodegress replaces it; beside it, it leaves
	# ClusterIPs and the health ports to kube-proxy.
	if [ "$KUBE_PROXY" = on ]; then
		overlay=tests/cluster/overlay-beside-kube-proxy
	fi
	log "installing nodegress (kubectl apply -k $overlay)"
	kubectl_ apply -k "$ROOT/$overlay" >/dev/null
	wait_for "nodegress agents Ready on $NODES nodes" "$NODEGRESS_TIMEOUT" nodegress_ready
	log "nodegress agents Ready on $NODES nodes in $((SECONDS - start))s"
}

# nodegress_ready reports whether the DaemonSet's current pods are Ready on
# every node. (Polled with short calls rather than `kubectl rollout
# status`, so an interrupted up leaves no long-running client behind.)
nodegress_ready() {
	local s
	s=$(kubectl_ -n nodegress get daemonset nodegress \
		-o jsonpath='{.metadata.generation} {.status.observedGeneration} {.status.updatedNumberScheduled} {.status.numberReady}')
	local gen obs updated ready
	read -r gen obs updated ready <<<"$s"
	[ "$gen" = "$obs" ] && [ "$updated" = "$NODES" ] && [ "$ready" = "$NODES" ]
}

# --- commands ----------------------------------------------------------------

# lock serializes up and down (two `up`s at once would fight over the same
# names). It is held on descriptor 8 until the command ends.
LOCKED=0
lock() {
	[ "$LOCKED" = 1 ] && return 0
	mkdir -p "$CACHE"
	exec 8>"$CACHE/cluster.lock"
	if ! flock -w 300 8; then
		die "another scripts/cluster.sh up or down has been running for 5 minutes"
	fi
	LOCKED=1
}

# running reports whether a cluster's processes are alive.
running() {
	local f
	for f in "$STATE"/pids/*; do
		if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
			return 0
		fi
	done
	return 1
}

load_config() {
	if [ -f "$STATE/config" ]; then
		# shellcheck disable=SC1091
		. "$STATE/config"
	fi
	NODES=${NODES:-2}
	KUBE_PROXY=${KUBE_PROXY:-off}
	NODEGRESS=${NODEGRESS:-on}
	DNS=${DNS:-on}
}

cmd_up() {
	NODES=${NODES:-2}
	KUBE_PROXY=${KUBE_PROXY:-off}
	NODEGRESS=${NODEGRESS:-on}
	DNS=${DNS:-on}
	[[ $NODES =~ ^[1-9][0-9]?$ ]] || die "NODES must be 1-99, not $NODES"
	case $KUBE_PROXY in on | off) ;; *) die "KUBE_PROXY must be on or off" ;; esac
	case $NODEGRESS in on | off) ;; *) die "NODEGRESS must be on or off" ;; esac
	case $DNS in on | off) ;; *) die "DNS must be on or off" ;; esac
	case ${GATEWAY_CHANNEL:-standard} in standard | experimental) ;; *) die "GATEWAY_CHANNEL must be standard or experimental" ;; esac
	[ "$(id -u)" -eq 0 ] || die "must run as root"

	local start=$SECONDS i pids=()
	lock
	# Leftovers of a failed or killed run are removed; a running cluster is
	# not, so that a test run cannot take away someone's cluster.
	if running; then
		# Its own exit status, so that a caller knows the cluster is
		# someone else's and must not tear it down.
		echo "cluster: a cluster is already up ($STATE); scripts/cluster.sh down first" >&2
		exit 4
	fi
	cmd_down quiet
	build_tools
	log "tools ready in $((SECONDS - start))s"

	mkdir -p "$STATE"/{log,pids,ns,images,nodes}
	printf 'NODES=%s\nKUBE_PROXY=%s\nNODEGRESS=%s\nDNS=%s\n' "$NODES" "$KUBE_PROXY" "$NODEGRESS" "$DNS" >"$STATE/config"
	# Tear everything down again if any step fails or up is interrupted.
	# (An EXIT trap, not ERR: subshells and background jobs do not inherit
	# it, so only this shell cleans up.)
	UP_DONE=0
	trap 'up_exit' EXIT
	trap 'exit 130' INT TERM

	build_images
	log "images ready in $((SECONDS - start))s"
	setup_network
	start_control_plane

	# A private mount point for the nodes' mount namespace files.
	mount --bind "$STATE/ns" "$STATE/ns"
	mount --make-private "$STATE/ns"
	for ((i = 1; i <= NODES; i++)); do
		write_node_config "$i"
		node_mount_ns "$i"
		start_containerd "$i"
	done
	for ((i = 1; i <= NODES; i++)); do
		import_images "$i" &
		pids+=($!)
	done
	wait_for "kube-apiserver" "$APISERVER_TIMEOUT" apiserver_ready
	register_nodes
	start_controllers
	for pid in "${pids[@]}"; do
		wait "$pid"
	done
	log "images imported in $((SECONDS - start))s"
	for ((i = 1; i <= NODES; i++)); do
		start_kubelet "$i"
		if [ "$KUBE_PROXY" = on ]; then
			start_kube_proxy "$i"
		fi
	done
	wait_for "$NODES nodes Ready" "$NODES_READY_TIMEOUT" nodes_ready
	# Pods are refused until the controller-manager has made the
	# namespace's default ServiceAccount.
	wait_for "the default ServiceAccount" "$NODES_READY_TIMEOUT" \
		kubectl_ -n default get serviceaccount default
	log "$NODES nodes Ready in $((SECONDS - start))s"
	# The Gateway API's CRDs and GatewayClass, as a user installs them,
	# before nodegress (whose agents look for the CRDs when they start).
	install_gateway_api
	# nodegress first: without kube-proxy, pods reach CoreDNS only
	# through it.
	if [ "$NODEGRESS" = on ]; then
		install_nodegress
	fi
	if [ "$DNS" = on ]; then
		install_dns
	fi
	UP_DONE=1
	log "up in $((SECONDS - start))s; eval \"\$($0 env)\" to use it"
}

up_exit() {
	local rc=$?
	if [ "$UP_DONE" != 1 ]; then
		log "up failed (exit status $rc); tearing down"
		save_logs
		cmd_down quiet
		exit $((rc == 0 ? 1 : rc))
	fi
}

# save_logs keeps the logs of a failed run where the next `down` does not
# remove them.
save_logs() {
	if [ -d "$STATE/log" ]; then
		rm -rf "$STATE.failed-logs"
		cp -r "$STATE/log" "$STATE.failed-logs" 2>/dev/null || true
		log "logs of the failed run: $STATE.failed-logs"
	fi
}

# kill_cgroup kills every process in REL (and below) and waits until the
# cgroups are empty, at most 10 s.
kill_cgroup() {
	local rel=$1 pids i
	[ -d "/sys/fs/cgroup/pids/$rel" ] || return 0
	for ((i = 0; i < 50; i++)); do
		pids=$(find "/sys/fs/cgroup/pids/$rel" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
		[ -z "$pids" ] && return 0
		# shellcheck disable=SC2086
		kill -9 $pids 2>/dev/null || true
		sleep 0.2
	done
	log "processes left in cgroup $rel: $pids"
}

cmd_down() {
	local quiet=${1:-} f pid name m ns mnt i
	lock
	[ "$quiet" = quiet ] || log "tearing down"
	# Stop the kubelets first, so nothing restarts containers, then every
	# recorded process politely, then whatever is left in the cgroups
	# (containers, shims) by force.
	if [ -d "$STATE/pids" ]; then
		for f in "$STATE"/pids/kubelet-* "$STATE"/pids/*; do
			[ -f "$f" ] || continue
			pid=$(cat "$f")
			kill -TERM "$pid" 2>/dev/null || true
		done
		# A throwaway cluster needs no long goodbyes: 3 s, then SIGKILL.
		for ((i = 0; i < 15; i++)); do
			local alive=0
			for f in "$STATE"/pids/*; do
				if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
					alive=1
				fi
			done
			[ $alive = 0 ] && break
			sleep 0.2
		done
		for f in "$STATE"/pids/*; do
			[ -f "$f" ] || continue
			kill -KILL "$(cat "$f")" 2>/dev/null || true
			rm -f "$f"
		done
	fi
	if [ -d "/sys/fs/cgroup/pids/$CGROUP_BASE" ]; then
		for d in "/sys/fs/cgroup/pids/$CGROUP_BASE"/*/; do
			if [ -d "$d" ]; then
				kill_cgroup "$CGROUP_BASE/$(basename "$d")"
			fi
		done
		kill_cgroup "$CGROUP_BASE"
	fi

	# Mounts on the host under the state directory (the nodes' namespace
	# files, the mount point holding them, anything leaked), deepest first.
	for mnt in $(awk -v s="$STATE/" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		umount "$mnt" 2>/dev/null || umount -l "$mnt" || log "cannot unmount $mnt"
	done

	# Network namespaces (their veths go with them), and the host's link.
	for ns in $(ip netns list | awk '{ print $1 }' | grep -E "^$P-(sw|cp|client|node[0-9]+)\$" || true); do
		ip netns del "$ns" 2>/dev/null || log "cannot delete netns $ns"
	done
	ip link del "$P-host" 2>/dev/null || true

	# cgroups, deepest first, in every hierarchy.
	while read -r m; do
		[ -d "$m/$CGROUP_BASE" ] || continue
		find "$m/$CGROUP_BASE" -depth -type d -exec rmdir {} + 2>/dev/null || true
		if [ -d "$m/$CGROUP_BASE" ]; then
			log "cgroup $m/$CGROUP_BASE left behind"
		fi
	done < <(cgroup_mounts)

	if [ -d "$STATE" ]; then
		rm -rf "$STATE" || log "cannot remove $STATE"
	fi
	if [ "$quiet" != quiet ]; then
		# An explicit down also drops the logs a failed up kept.
		rm -rf "$STATE.failed-logs"
		log "down"
	fi
	return 0
}

cmd_env() {
	[ -f "$STATE/config" ] || die "no cluster (scripts/cluster.sh up)"
	load_config
	KUBE_BIN=$("$ROOT/scripts/kube-bins.sh" --check)
	local i nodes="" ips="" netns=""
	for ((i = 1; i <= NODES; i++)); do
		nodes+="${nodes:+ }node$i"
		ips+="${ips:+ }$(node_ip "$i")"
		netns+="${netns:+ }$P-node$i"
	done
	cat <<EOF
KUBECONFIG='$STATE/pki/admin.kubeconfig'
KUBECTL='$KUBE_BIN/kubectl'
CLIENT_NETNS='$P-client'
CLIENT_IP='$CLIENT_IP'
NODES='$nodes'
NODE_IPS='$ips'
NODE_NETNS='$netns'
POD_CIDR='$CLUSTER_CIDR'
SERVICE_CIDR='$SERVICE_CIDR'
GATEWAY_POOL='$GATEWAY_POOL'
GATEWAY_STATIC='$GATEWAY_STATIC'
API_SERVER='https://$CP_IP:6443'
KUBE_PROXY='$KUBE_PROXY'
DNS='$DNS'
DNS_IP='$([ "$DNS" = on ] && echo "$DNS_SVC_IP")'
EOF
}

# cmd_status exits 0 when the cluster's processes run, 3 when none does.
cmd_status() {
	[ -f "$STATE/config" ] || {
		echo "no cluster"
		return 3
	}
	load_config
	KUBE_BIN=$("$ROOT/scripts/kube-bins.sh" --check)
	echo "nodes: $NODES, kube-proxy: $KUBE_PROXY, nodegress: $NODEGRESS, dns: $DNS"
	local f
	for f in "$STATE"/pids/*; do
		[ -f "$f" ] || continue
		if kill -0 "$(cat "$f")" 2>/dev/null; then
			echo "  $(basename "$f"): running (pid $(cat "$f"))"
		else
			echo "  $(basename "$f"): NOT RUNNING"
		fi
	done
	if ! running; then
		return 3
	fi
	kubectl_ get nodes -o wide 2>&1 || true
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
install-nodegress)
	load_config
	KUBE_BIN=$("$ROOT/scripts/kube-bins.sh" --check)
	install_nodegress
	;;
*)
	echo "usage: $0 up|down|env|status|install-nodegress" >&2
	exit 2
	;;
esac
