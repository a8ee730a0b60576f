#!/usr/bin/env bash
# Runs the benchmarks (`make bench`). Knobs, as environment or make
# variables:
#   BENCH_SUITE     l7 (the proxy against nginx and haproxy), l4 (the
#                   NodePort hop against kube-proxy), gateway (Gateway API:
#                   HTTPRoute change to traffic at 1, 1k, 5k routes, changes
#                   under load, the agent at 5k routes), kdrop (what
#                   `nodegress trace --kernel-drops` costs a kernel drop:
#                   BenchmarkKernelDrop in loader) or all (default)
#   BENCH_FILTER    regexp over "row/peer" names. L7: http1, tls-new, h2 ×
#                   nginx, haproxy, nodegress, nodegress+accesslog
#                   (e.g. BENCH_FILTER=http1, BENCH_FILTER='h2/(nginx|nodegress)').
#                   L4: keepalive-local, keepalive-remote, newconn-local,
#                   newconn-remote, udp-local, udp-remote, affinity-remote,
#                   maglev-remote (nodegress only), fixednc{1k,5k,10k}-remote,
#                   dsr-{keepalive,newconn,connect}-remote,
#                   dsr-fixednc{1k,5k,10k}-remote, firstpacket1,
#                   firstpacket1k, epchange, scale10k × routing, iptables,
#                   nftables, nodegress (e.g. BENCH_FILTER='keepalive-remote/').
#                   Gateway: change1, change1k, change5k, churn1k,
#                   resources5k × nodegress (e.g. BENCH_FILTER=change1/)
#   BENCH_DURATION  one measurement (default 10s for L7, 3s for L4)
#   BENCH_ROUNDS    rounds per cell, the median is reported (default 3)
#   BENCH_XDP_MODE  the L4 agents' --xdp-mode (default auto: tc only on the
#                   topology's veths; native: XDP, which hands frames without
#                   a complete checksum to tc; off: tc only)
#   BENCH_CHECKSUMS full turns TX checksum offload off on every veth sending
#                   into a node (frames as from a hardware NIC, so forced XDP
#                   translates them itself); default: the kernel's offloads
#   BENCH_MODE      table (default), pprof (CPU profile of nodegress's
#                   proxy under load, top 25), or all
# Reports go to tests/bench/results/. See tests/bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
GO=${GO:-go}

scripts/install-bench-deps.sh
mkdir -p bin
$GO build -o bin/benchproxy ./tests/bench/cmd/benchproxy
$GO build -o bin/benchload ./tests/bench/cmd/benchload

rundir=$(mktemp -d /tmp/nodegress-bench.XXXXXX)
# The harness stops what it started; this is the fallback for a harness
# that died (a test timeout runs no cleanups): it signals exactly the
# process groups the harness recorded and has not stopped itself.
cleanup() {
	local pgids=()
	if [ -s "$rundir/pgids" ]; then
		mapfile -t pgids <"$rundir/pgids"
	fi
	if [ ${#pgids[@]} -gt 0 ]; then
		echo "stopping leftover benchmark processes: ${pgids[*]}" >&2
		for g in "${pgids[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
		sleep 1
		for g in "${pgids[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
	fi
	# The L4 suite records the pin directories it mounted and the
	# network namespaces it made (exact names), for the same case.
	local m n
	if [ -s "$rundir/mounts" ]; then
		while read -r m; do umount -l "$m" 2>/dev/null || true; done <"$rundir/mounts"
	fi
	if [ -s "$rundir/netns" ]; then
		while read -r n; do
			[ -e "/run/netns/$n" ] || continue
			echo "removing leftover network namespace $n" >&2
			ip netns pids "$n" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
			ip netns del "$n" 2>/dev/null || true
		done <"$rundir/netns"
	fi
	rm -rf "$rundir"
}
trap cleanup EXIT

cmdline="make bench"
for v in BENCH_SUITE BENCH_FILTER BENCH_DURATION BENCH_ROUNDS BENCH_MODE BENCH_XDP_MODE BENCH_CHECKSUMS; do
	if [ -n "${!v:-}" ]; then cmdline+=" $v=${!v}"; fi
done

# Kernel drop tracing: a loader benchmark, no peers or topology needed.
kdrop_bench() {
	mkdir -p tests/bench/results
	local out
	out=tests/bench/results/kdrop-$(date -u +%Y-%m-%d-%H%M%S).txt
	$GO test ./loader -run '^$' -bench '^BenchmarkKernelDrop$' -benchtime 200000x -count 3 |
		tee "$out"
	echo "kernel drop tracing: $out"
}
if [ "${BENCH_SUITE:-all}" = kdrop ]; then
	kdrop_bench
	exit 0
fi

case ${BENCH_SUITE:-all} in
l7) tests='^TestL7$' timeout=20m ;;
l4) tests='^TestL4$' timeout=40m ;;
gateway) tests='^TestGateway$' timeout=30m ;;
all)
	tests='^(TestL4|TestL7|TestGateway)$' timeout=90m
	kdrop_bench
	;;
*)
	echo "BENCH_SUITE=${BENCH_SUITE}: want l4, l7, gateway or all" >&2
	exit 2
	;;
esac
env=()
if [ "${BENCH_SUITE:-all}" != l7 ]; then
	# The L4 and gateway suites run the agent and pod servers `make
	# build` made, and the control plane (and kube-proxy) built from the
	# API server's Kubernetes version (minutes the first time, cached
	# after).
	$GO build -o bin/nodegress ./cmd/nodegress
	$GO build -o bin/podserver ./tests/cmd/podserver
	env+=(NODEGRESS_BIN="$root/bin/nodegress" PODSERVER_BIN="$root/bin/podserver"
		NODEGRESS_KUBE_BIN_DIR="$(scripts/kube-bins.sh)")
fi

# The suites sit behind the bench build tag, so that `go test ./...`
# lists no benchmark that would only skip.
$GO test -tags bench -c -o "$rundir/bench.test" ./tests/bench
# The harness and everything it starts default to core 0; the system
# under test (the L7 proxy; the L4 backends) is pinned to core 1 by the
# harness.
cd tests/bench
env NODEGRESS_BENCH=1 BENCH_RUNDIR="$rundir" BENCH_COMMAND="$cmdline" BENCHPROXY_BIN="$root/bin/benchproxy" \
	BENCHLOAD_BIN="$root/bin/benchload" "${env[@]}" \
	taskset -c 0 "$rundir/bench.test" -test.v -test.count=1 -test.timeout=$timeout -test.run "$tests"
