#!/usr/bin/env bash
# Runs the benchmarks (`make bench`). Knobs, as environment or make
# variables:
#   BENCH_FILTER    regexp over "row/proxy" names: http1, tls-new, h2 ×
#                   nginx, haproxy, nodegress, nodegress+accesslog
#                   (e.g. BENCH_FILTER=http1, BENCH_FILTER='h2/(nginx|nodegress)')
#   BENCH_DURATION  one measurement (default 10s)
#   BENCH_ROUNDS    rounds per cell, the median is reported (default 3)
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
	rm -rf "$rundir"
}
trap cleanup EXIT

cmdline="make bench"
for v in BENCH_FILTER BENCH_DURATION BENCH_ROUNDS BENCH_MODE; do
	if [ -n "${!v:-}" ]; then cmdline+=" $v=${!v}"; fi
done

$GO test -c -o "$rundir/bench.test" ./tests/bench
# The harness and everything it starts default to core 0; the proxy under
# test is pinned to core 1 by the harness.
cd tests/bench
NODEGRESS_BENCH=1 BENCH_RUNDIR=$rundir BENCH_COMMAND=$cmdline BENCHPROXY_BIN=$root/bin/benchproxy BENCHLOAD_BIN=$root/bin/benchload \
	taskset -c 0 "$rundir/bench.test" -test.v -test.count=1 -test.timeout=20m -test.run '^TestL7$'
