#!/usr/bin/env bash
# Runs the Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance
# at the version of sigs.k8s.io/gateway-api in go.mod) against nodegress on
# the local cluster of scripts/cluster.sh: real kubelets and pods, the
# Gateway API's CRDs and GatewayClass and nodegress installed from
# manifests/, no kube-proxy. The suite runs in the cluster's client
# namespace (outside the cluster, where Gateway addresses are routed to
# node1) and writes its ConformanceReport to
# conformance/reports/<version>/nodegress-<profiles>.yaml.
#
# The run holds /var/lock/nodegress-cluster.lock from `up` to `down`: only
# one cluster runs on the machine at a time.
#
# Environment:
#   CONFORMANCE_PROFILES   default GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS
#   CONFORMANCE_FEATURES   extended features claimed (--supported-features);
#                          default: the ones nodegress implements (below)
#   CONFORMANCE_CHANNEL    standard (default) or experimental: the Gateway
#                          API CRDs installed; experimental also claims the
#                          features of fields only that channel has, and
#                          the report's name ends in -experimental
#   CONFORMANCE_ADDRESS_SOURCE
#                          pool (default) or service: the agents'
#                          GATEWAY_ADDRESS_SOURCE. service gives every
#                          Gateway a LoadBalancer Service, whose IPs a
#                          stand-in load balancer controller of this script
#                          assigns (the local cluster has none), claims
#                          GatewayInfrastructure and names the report
#                          ...-service.yaml
#   CONFORMANCE_RUN_TEST   one test only (--run-test), for debugging
#   CONFORMANCE_TIMEOUT    bound of the suite (default 60m)
#   CONFORMANCE_OUT        logs (default /var/tmp/nodegress-conformance)
#
# Usage: scripts/conformance.sh [build]   (build: only the suite's binary)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=/var/cache/nodegress
LOCK=/var/lock/nodegress-cluster.lock
OUT=${CONFORMANCE_OUT:-/var/tmp/nodegress-conformance}
PROFILES=${CONFORMANCE_PROFILES:-GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS}
TIMEOUT=${CONFORMANCE_TIMEOUT:-60m}
# Extended features nodegress implements; the suite runs their tests too.
FEATURES=${CONFORMANCE_FEATURES:-HTTPRouteQueryParamMatching,HTTPRouteMethodMatching,HTTPRouteResponseHeaderModification,HTTPRoutePortRedirect,HTTPRouteSchemeRedirect,HTTPRoutePathRedirect,HTTPRouteHostRewrite,HTTPRoutePathRewrite,HTTPRoute303RedirectStatusCode,HTTPRoute307RedirectStatusCode,HTTPRoute308RedirectStatusCode,HTTPRouteParentRefPort,HTTPRouteNamedRouteRule,HTTPRouteBackendProtocolH2C,HTTPRouteBackendProtocolWebSocket,GatewayPort8080,GatewayHTTPListenerIsolation,GatewayAddressEmpty,HTTPRouteRequestTimeout,HTTPRouteBackendTimeout,TLSRouteModeTerminate,TLSRouteModeMixed,GatewayStaticAddresses,GatewayHTTPSListenerDetectMisdirectedRequests,GatewayFrontendClientCertificateValidation,GatewayFrontendClientCertificateValidationInsecureFallback,GatewayBackendClientCertificate,ListenerSet,BackendTLSPolicy,BackendTLSPolicySANValidation,HTTPRouteCORS,HTTPRouteBackendRequestHeaderModification,HTTPRouteRequestMirror,HTTPRouteRequestMultipleMirrors,HTTPRouteRequestPercentageMirror}
# Features claimed with the experimental channel's CRDs only: those of
# fields only that channel has (rules[].retry), and those the Gateway API
# lists as experimental-channel features (HTTPRouteDestinationPortMatching:
# routes attached by their parentRefs' port).
EXPERIMENTAL_FEATURES=HTTPRouteRetry,HTTPRouteRetryBackendTimeout,HTTPRouteRetryConnectionError,HTTPRouteDestinationPortMatching
# Claimed with CONFORMANCE_ADDRESS_SOURCE=service: its test looks for a
# Service labelled with the Gateway's name, made only in that mode.
SERVICE_FEATURES=GatewayInfrastructure
ADDRESS_SOURCE=${CONFORMANCE_ADDRESS_SOURCE:-pool}
case $ADDRESS_SOURCE in pool | service) ;; *)
	echo "conformance: CONFORMANCE_ADDRESS_SOURCE must be pool or service" >&2
	exit 2
	;;
esac
CHANNEL=${CONFORMANCE_CHANNEL:-standard}
case $CHANNEL in standard | experimental) ;; *)
	echo "conformance: CONFORMANCE_CHANNEL must be standard or experimental" >&2
	exit 2
	;;
esac

log() { echo "conformance: $*" >&2; }

cd "$ROOT"
VERSION=$(go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)
[ -n "$VERSION" ] || {
	log "no sigs.k8s.io/gateway-api in go.mod"
	exit 1
}
BIN=$CACHE/gateway-conformance/conformance-$VERSION.test

# The suite's test binary, built from a module of our own that requires
# both gateway-api modules at the same version (the conformance module's
# replace of the root module does not apply from the module proxy).
build_suite() {
	[ -x "$BIN" ] && return
	log "building the conformance suite $VERSION"
	mkdir -p "$CACHE/gateway-conformance/build"
	(
		cd "$CACHE/gateway-conformance/build"
		printf 'module gatewayconformancebuild\n\ngo 1.26\n' >go.mod
		export GOSUMDB=off GOFLAGS=-mod=mod GOWORK=off
		go get "sigs.k8s.io/gateway-api@$VERSION" "sigs.k8s.io/gateway-api/conformance@$VERSION" >&2
		go test -c -o "$BIN.tmp" sigs.k8s.io/gateway-api/conformance
	)
	mv -f "$BIN.tmp" "$BIN"
}

run() {
	mkdir -p "$OUT" "$ROOT/conformance/reports/$VERSION"
	local report=$ROOT/conformance/reports/$VERSION/nodegress-${PROFILES//,/-}.yaml
	local features=$FEATURES
	if [ "$CHANNEL" = experimental ]; then
		report=${report%.yaml}-experimental.yaml
		features+=,$EXPERIMENTAL_FEATURES
	fi
	if [ "$ADDRESS_SOURCE" = service ]; then
		report=${report%.yaml}-service.yaml
		features+=,$SERVICE_FEATURES
	fi
	local args=(
		-test.run '^TestConformance$' -test.v -test.timeout "$TIMEOUT"
		--gateway-class nodegress
		--conformance-profiles "$PROFILES"
		--supported-features "$features"
		# GatewayStaticAddresses: one of the ranges Gateways may use (routed
		# to node1), and an address outside them.
		--usable-address 10.214.1.10 --unusable-address 192.0.2.77
		--organization nodegress --project nodegress
		--url https://github.com/nodegress/nodegress
		--version "$(git -C "$ROOT" describe --always --dirty)"
		--contact https://github.com/nodegress/nodegress/issues
		--report-output "$report"
	)
	if [ -n "${CONFORMANCE_RUN_TEST:-}" ]; then
		args+=(--run-test "$CONFORMANCE_RUN_TEST")
	fi
	NODES=2 KUBE_PROXY=off NODEGRESS=on DNS=on GATEWAY_CHANNEL=$CHANNEL scripts/cluster.sh up
	trap 'scripts/cluster.sh down >&2' EXIT
	eval "$(scripts/cluster.sh env)"
	# The admin kubeconfig names the API server by the host's link to it;
	# from the client namespace it is on the segment.
	local kubeconfig=$OUT/client.kubeconfig
	sed "s#^\( *server:\).*#\1 $API_SERVER#" "$KUBECONFIG" >"$kubeconfig"
	if [ "$ADDRESS_SOURCE" = service ]; then
		use_service_addresses
	fi
	log "running the suite ($PROFILES) from $CLIENT_NETNS; log in $OUT/suite.log"
	local rc=0
	# The suite finds its manifests and the CRDs' versions through the
	# API server; it reaches Gateways at their status addresses, routed
	# from the client namespace to node1.
	(cd "$OUT" && ip netns exec "$CLIENT_NETNS" env KUBECONFIG="$kubeconfig" HOME="$OUT" \
		"$BIN" "${args[@]}") >"$OUT/suite.log" 2>&1 || rc=$?
	grep -E '^(--- (PASS|FAIL|SKIP)|FAIL|PASS|ok)' "$OUT/suite.log" | tail -60 >&2 || true
	# The agents' logs, for what the suite's log cannot tell.
	local pod
	for pod in $("$KUBECTL" --kubeconfig "$KUBECONFIG" -n nodegress get pods -o name 2>/dev/null); do
		"$KUBECTL" --kubeconfig "$KUBECONFIG" -n nodegress logs "$pod" >"$OUT/agent-${pod#pod/}.log" 2>&1 || true
	done
	if [ -f "$report" ]; then
		log "report: ${report#"$ROOT"/}"
	fi
	return "$rc"
}

# use_service_addresses switches the agents to GATEWAY_ADDRESS_SOURCE=service
# (an env entry overrides the ConfigMap's) with the Service permissions of
# manifests/gateway-api/service-addresses.yaml, and starts the stand-in
# load balancer controller; the EXIT trap stops it.
use_service_addresses() {
	local k=("$KUBECTL" --kubeconfig "$KUBECONFIG")
	"${k[@]}" apply -f "$ROOT/manifests/gateway-api/service-addresses.yaml" >&2
	"${k[@]}" -n nodegress set env daemonset/nodegress GATEWAY_ADDRESS_SOURCE=service >&2
	"${k[@]}" -n nodegress rollout status daemonset/nodegress --timeout=180s >&2
	assign_lb_ips "${k[@]}" >"$OUT/lb-assigner.log" 2>&1 &
	local pid=$!
	trap 'kill '"$pid"' 2>/dev/null; scripts/cluster.sh down >&2' EXIT
}

# assign_lb_ips KUBECTL... plays a load balancer controller until killed:
# every second it gives each Gateway Service of nodegress without a load
# balancer IP one from the cluster's Gateway pool (routed to node1, unused
# in this mode), the same one again to a Service of the same name.
assign_lb_ips() {
	local -A given=()
	local next=1 ns name ip
	while sleep 1; do
		while read -r ns name ip; do
			[ "$ip" = "<none>" ] || continue
			if [ -z "${given[$ns/$name]:-}" ]; then
				[ "$next" -le 254 ] || continue
				given[$ns/$name]=10.214.0.$next
				next=$((next + 1))
			fi
			echo "assigning ${given[$ns/$name]} to $ns/$name"
			"$@" -n "$ns" patch service "$name" --subresource=status --type=merge \
				-p '{"status":{"loadBalancer":{"ingress":[{"ip":"'"${given[$ns/$name]}"'"}]}}}' || true
		done < <("$@" get services -A -l app.kubernetes.io/managed-by=nodegress --no-headers \
			-o custom-columns=NS:.metadata.namespace,NAME:.metadata.name,IP:.status.loadBalancer.ingress[0].ip)
	done
}

build_suite
if [ "${1:-}" = build ]; then
	exit 0
fi
exec 9>"$LOCK"
flock -w 3600 9 || {
	log "another cluster holds $LOCK"
	exit 1
}
run
