#!/usr/bin/env bash
# Runs Kubernetes' own e2e tests (e2e.test from k8s.io/kubernetes, built by
# scripts/kube-bins.sh --e2e) that concern Services, EndpointSlices,
# NodePorts, session affinity, traffic policies and Ingress against the local
# cluster of scripts/cluster.sh, twice:
#
#   kube-proxy  KUBE_PROXY=on  NODEGRESS=off  (the reference)
#   nodegress   KUBE_PROXY=off NODEGRESS=on   (nodegress instead of kube-proxy)
#
# and writes tests/upstream/junit-RUN.xml (trimmed to the focused tests) and
# tests/upstream/summary.md (one row per test, one column per run).
#
# Usage: scripts/e2e-upstream.sh [all|run RUN|summary]
#   all      both runs, then the summary (make e2e-upstream)
#   run RUN  one run: cluster up, e2e.test, cluster down
#   summary  the summary from the JUnit files already there
#
# Every run holds /var/lock/nodegress-cluster.lock from `up` to `down`: the
# machine may be shared, and only one cluster runs at a time.
#
# Environment:
#   E2E_PROCS=8        ginkgo parallel processes (the tests mostly wait)
#   E2E_TIMEOUT=40m    bound of one run of e2e.test
#   E2E_FOCUS, E2E_SKIP  override the regexps below
#   E2E_OUT            raw reports and logs (default /var/tmp/nodegress-e2e-upstream)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/tests/upstream
OUT=${E2E_OUT:-/var/tmp/nodegress-e2e-upstream}
LOCK=/var/lock/nodegress-cluster.lock
LOCK_WAIT=3600
PROCS=${E2E_PROCS:-8}
TIMEOUT=${E2E_TIMEOUT:-40m}
# Some tests want 2 nodes, the HealthCheckNodePort one 3.
NUM_NODES=3

# The tests that concern us, by name.
FOCUS=${E2E_FOCUS:-'\[sig-network\].*(Services|EndpointSlice|NodePort|[Ss]ession ?[Aa]ffinity|ExternalTrafficPolicy|[Ii]ngress|Networking)'}
# Not run: needing the cluster alone ([Serial]) or restarting its parts
# ([Disruptive]), IPv6, feature-gated ones (cloud load balancers among
# them), and NetworkPolicy (its names mention "ingress"). [Slow] ones run.
SKIP=${E2E_SKIP:-'\[Disruptive\]|\[Serial\]|IPv6|\[Feature:[^]]*\]|Netpol'}
# Listed in the summary as not run, with the reason; NetworkPolicy tests are
# not listed at all.
HIDE='Netpol|NetworkPolicy'

RUNS=(kube-proxy nodegress)
declare -A LABEL=(
	[kube-proxy]="with kube-proxy"
	[nodegress]="with nodegress (no kube-proxy)"
)
declare -A CLUSTER_ENV=(
	[kube-proxy]="KUBE_PROXY=on NODEGRESS=off"
	[nodegress]="KUBE_PROXY=off NODEGRESS=on"
)

HOST_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom)

log() { echo "e2e-upstream: $*" >&2; }
die() {
	log "$*"
	exit 1
}

summary_tool() {
	(cd "$ROOT" && go run ./tests/cmd/upstreamsummary "$@")
}

# run_one NAME, with the lock held: up, e2e.test, down.
run_one() {
	local name=$1 start=$SECONDS dir=$OUT/$1 bin sysctls rc=0
	[ -n "${CLUSTER_ENV[$name]:-}" ] || die "unknown run $name (one of: ${RUNS[*]})"
	bin=$("$ROOT/scripts/kube-bins.sh" --e2e --coredns)
	sysctls=$(sysctl "${HOST_SYSCTLS[@]}")
	rm -rf "$dir"
	mkdir -p "$dir"
	trap '"$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true' EXIT
	log "$name: cluster up (${CLUSTER_ENV[$name]})"
	# shellcheck disable=SC2086
	env NODES=$NUM_NODES DNS=on ${CLUSTER_ENV[$name]} "$ROOT/scripts/cluster.sh" up 2>"$dir/cluster-up.log" ||
		die "$name: cluster up failed, see $dir/cluster-up.log"
	local up=$((SECONDS - start))
	eval "$("$ROOT/scripts/cluster.sh" env)"
	export KUBECONFIG
	log "$name: cluster up in ${up}s; e2e.test (focus $FOCUS, skip $SKIP, $PROCS processes)"
	# e2e.test runs here, in the host's namespaces; it reaches the API
	# server through KUBECONFIG and the nodes and pods only through pods
	# (kubectl exec), as the tests are written to.
	timeout --kill-after=60s "$((${TIMEOUT%m} + 10))m" \
		"$bin/ginkgo" --procs="$PROCS" --timeout="$TIMEOUT" --flake-attempts=1 \
		--focus="$FOCUS" --skip="$SKIP" --no-color \
		"$bin/e2e.test" -- \
		--provider=skeleton --num-nodes="$NUM_NODES" \
		--kubeconfig="$KUBECONFIG" --kubectl-path="$KUBECTL" \
		--report-dir="$dir" --dump-logs-on-failure=false --disable-log-dump \
		--allowed-not-ready-nodes=0 --node-schedulable-timeout=2m \
		>"$dir/e2e.log" 2>&1 || rc=$?
	local ran=$((SECONDS - start - up))
	log "$name: e2e.test exited with $rc after ${ran}s; cluster down"
	"$ROOT/scripts/cluster.sh" down 2>>"$dir/cluster-up.log"
	trap - EXIT
	if [ "$(sysctl "${HOST_SYSCTLS[@]}")" != "$sysctls" ]; then
		die "$name: host sysctls changed: was $sysctls, now $(sysctl "${HOST_SYSCTLS[@]}")"
	fi
	local junit
	junit=$(find "$dir" -name 'junit_*.xml' | head -1)
	[ -n "$junit" ] || die "$name: no JUnit report in $dir (see $dir/e2e.log)"
	mkdir -p "$DEST"
	summary_tool trim --focus "$FOCUS" --skip "$SKIP" --hide "$HIDE" "$junit" "$DEST/junit-$name.xml"
	printf '%s up=%ss e2e=%ss rc=%s procs=%s date=%s\n' "$name" "$up" "$ran" "$rc" "$PROCS" \
		"$(date -u +%Y-%m-%dT%H:%MZ)" >"$DEST/run-$name.txt"
	log "$name: done in $((SECONDS - start))s, $DEST/junit-$name.xml"
}

summary() {
	local args=() opts=() name
	for name in "${RUNS[@]}"; do
		[ -f "$DEST/junit-$name.xml" ] || die "no $DEST/junit-$name.xml: scripts/e2e-upstream.sh run $name"
		args+=("${LABEL[$name]}=$DEST/junit-$name.xml")
	done
	if [ -f "$DEST/causes.tsv" ]; then
		opts+=(--causes "$DEST/causes.tsv")
	fi
	summary_tool summary "${opts[@]}" --focus "$FOCUS" --skip "$SKIP" --hide "$HIDE" --out "$DEST/summary.md" \
		--title "# Kubernetes e2e (v1.37.2) on the local cluster: with kube-proxy, then with nodegress instead

Focus \`$FOCUS\`, skip \`$SKIP\`; see [README.md](README.md)." \
		"${args[@]}"
	log "wrote $DEST/summary.md"
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
case ${1:-all} in
all)
	"$ROOT/scripts/kube-bins.sh" --e2e --coredns >/dev/null
	for name in "${RUNS[@]}"; do
		"$0" run "$name"
	done
	summary
	;;
run)
	[ -n "${2:-}" ] || die "usage: $0 run RUN"
	if [ "${E2E_LOCKED:-}" != 1 ]; then
		exec env E2E_LOCKED=1 flock -w "$LOCK_WAIT" "$LOCK" "$0" run "$2"
	fi
	run_one "$2"
	;;
summary) summary ;;
*)
	echo "usage: $0 [all|run RUN|summary]" >&2
	exit 2
	;;
esac
