#!/usr/bin/env bash
# Builds real Kubernetes components from Go modules and caches them by
# version, for the tests, the demo and the local cluster: the control plane
# (kube-apiserver, kube-controller-manager, kube-scheduler, etcd), the node
# (kubelet, kube-proxy), kubectl and agnhost (the e2e tests' server image's
# binary).
#
# Prebuilt release binaries cannot be downloaded here; the Go module proxy can
# be reached, so everything is compiled from the published modules:
#   - k8s.io/kubernetes at KUBE_VERSION. Its go.mod points every k8s.io/*
#     staging module at ./staging, which the module zip does not contain, so
#     the replace directives are dropped in favour of the published
#     k8s.io/*@STAGING_VERSION modules (the same code, released in lockstep).
#   - go.etcd.io/etcd/server/v3 at ETCD_VERSION through a tiny main package
#     calling etcdmain.Main, which is all the etcd binary is. ETCD_VERSION is
#     the one k8s.io/kubernetes itself requires (its integration tests run
#     that etcd; hack/lib/etcd.sh refuses older ones).
#   - with --coredns, CoreDNS at COREDNS_VERSION (the cluster DNS kubeadm
#     1.37 deploys) through a main package like CoreDNS's own, with only
#     the plugins a cluster.local-only DNS needs and those the Gateway API
#     conformance suite's own CoreDNS uses (forward, whoami); no clouds.
#
# Usage: scripts/kube-bins.sh [--check] [--e2e] [--coredns]
#   Prints the directory holding the binaries on stdout (progress goes to
#   stderr). With --check it builds nothing and exits 1 when the cache is
#   incomplete. When the cache is complete it returns in well under a second.
#   An incomplete cache is completed: binaries already there at the pinned
#   version are kept, only the missing ones are built.
#   With --e2e the set also holds e2e.test, Kubernetes' own end-to-end
#   suite (`go test -c ./test/e2e` in the same module copy, ~4 min more),
#   and ginkgo, the runner that runs it in parallel (the version kubernetes
#   requires); without it neither is built nor required. --coredns does the
#   same for coredns.
#
# Environment:
#   NODEGRESS_KUBE_CACHE  cache root (default /var/cache/nodegress/kube)
set -euo pipefail

# KUBE_VERSION follows the k8s.io/client-go in go.mod (v0.X.Y <-> v1.X.Y).
KUBE_VERSION=v1.37.2
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
ETCD_VERSION=v3.7.0
# The agnhost k8s.io/kubernetes@KUBE_VERSION carries (test/images/agnhost/
# VERSION) and its e2e tests name in their image tag.
AGNHOST_VERSION=2.66.1
COREDNS_VERSION=v1.12.2
KUBE_CMDS=(kube-apiserver kubectl kube-proxy kubelet kube-controller-manager kube-scheduler)
BINS=("${KUBE_CMDS[@]}" etcd agnhost)
CHECK=0
for arg in "$@"; do
	case $arg in
	--check) CHECK=1 ;;
	--e2e) BINS+=(e2e.test ginkgo) ;;
	--coredns) BINS+=(coredns) ;;
	*)
		echo "usage: $0 [--check] [--e2e] [--coredns]" >&2
		exit 2
		;;
	esac
done

CACHE_ROOT=${NODEGRESS_KUBE_CACHE:-/var/cache/nodegress/kube}
OUT=$CACHE_ROOT/$KUBE_VERSION

log() { echo "kube-bins: $*" >&2; }

# good reports whether the binary b in the cache is there and is the pinned
# version. Running --version also catches truncated or foreign binaries.
good() {
	local b=$1 v
	[ -x "$OUT/$b" ] || return 1
	case $b in
	kubectl)
		v=$("$OUT/kubectl" version --client 2>/dev/null) || return 1
		[[ $v == *"$KUBE_VERSION"* ]]
		;;
	etcd)
		v=$("$OUT/etcd" --version 2>/dev/null) || return 1
		[[ $v == *"etcd Version: ${ETCD_VERSION#v}"* ]]
		;;
	agnhost)
		v=$("$OUT/agnhost" --version 2>/dev/null) || return 1
		# cobra prints "app version X" (agnhost names its root command "app").
		[[ $v == *" version $AGNHOST_VERSION" ]]
		;;
	coredns)
		v=$("$OUT/coredns" -version 2>/dev/null) || return 1
		[[ $v == "CoreDNS-${COREDNS_VERSION#v}"* ]] || return 1
		"$OUT/coredns" -plugins 2>/dev/null | grep -qw whoami
		;;
	ginkgo)
		[ -x "$OUT/ginkgo" ] || return 1
		v=$("$OUT/ginkgo" version 2>/dev/null) || return 1
		[ "$v" = "Ginkgo Version $(cat "$OUT/ginkgo.version" 2>/dev/null)" ]
		;;
	e2e.test)
		# e2e.test has no --version; the build writes a stamp next to it
		# only once the binary is in place.
		[ "$(cat "$OUT/e2e.test.version" 2>/dev/null)" = "$KUBE_VERSION" ]
		;;
	*)
		v=$("$OUT/$b" --version 2>/dev/null) || return 1
		[ "$v" = "Kubernetes $KUBE_VERSION" ]
		;;
	esac
}

# cached reports whether every binary is present and is the pinned version.
cached() {
	local b
	for b in "${BINS[@]}"; do
		good "$b" || return 1
	done
}

if cached; then
	echo "$OUT"
	exit 0
fi
if [ "$CHECK" = 1 ]; then
	log "no complete cache in $OUT"
	exit 1
fi

mkdir -p "$CACHE_ROOT"
# Several test binaries may ask for the control plane at once: one builds,
# the others wait and then find the cache filled.
exec 9>"$CACHE_ROOT/.lock"
flock 9
if cached; then
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null || { log "go not found in PATH"; exit 1; }

BUILD=$CACHE_ROOT/.build-$KUBE_VERSION
rm -rf "$BUILD"
mkdir -p "$BUILD/bin"
trap 'rm -rf "$BUILD"' EXIT

# The checksum database (sum.golang.org) is not reachable from here, and the
# edited go.mod pulls modules that kubernetes' go.sum does not list (the
# published k8s.io/* staging modules, etcd's graph). So verification against
# the database is off for these builds only; every module listed in the
# go.sum files is still checked against them. GOWORK=off because the module
# ships a go.work naming ./staging directories it does not contain.
export GOSUMDB=off GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
# The machine is shared with benchmarks: build at the lowest priority.
NICE=(nice -n 19)
start=$SECONDS

log "fetching k8s.io/kubernetes@$KUBE_VERSION"
# Outside any module, so the caller's go.mod and go.sum are never touched.
cd "$BUILD"
src=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { log "module directory not found for k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
cp -r "$src" "$BUILD/kubernetes"
chmod -R u+w "$BUILD/kubernetes"
cd "$BUILD/kubernetes"
rm -rf go.work go.work.sum vendor

edits=()
while read -r mod; do
	edits+=("-dropreplace=$mod")
	# Only modules kubernetes actually requires get a requirement; the
	# sample-* staging modules are replaced but never required.
	if grep -qE "^[[:space:]]+$mod v0\.0\.0( |\$)" go.mod; then
		edits+=("-require=$mod@$STAGING_VERSION")
	fi
done < <(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/.*|\1|p' go.mod)
go mod edit "${edits[@]}"
if grep -q '=> ./staging' go.mod; then
	log "staging replace directives left in go.mod"
	exit 1
fi
want=$(go mod edit -json | sed -n '/"Path": "go.etcd.io\/etcd\/server\/v3"/{n;s/.*"Version": "\(.*\)".*/\1/p}')
if [ "$want" != "$ETCD_VERSION" ]; then
	log "k8s.io/kubernetes@$KUBE_VERSION requires etcd $want, ETCD_VERSION is $ETCD_VERSION: update the script"
	exit 1
fi

# The same version stamps kubernetes' own build sets (hack/lib/version.sh),
# so --version, /version and kubectl's skew checks report the real release.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# Each binary is moved into the cache as soon as it is built (a rename on
# one file system): an interrupted build keeps what it finished, and
# cached() checks every binary's version, so a partial cache is never taken
# for a complete one.
mkdir -p "$OUT"
for cmd in "${KUBE_CMDS[@]}"; do
	good "$cmd" && continue
	log "building $cmd $KUBE_VERSION"
	"${NICE[@]}" go build -trimpath -ldflags "$ldflags" -o "$BUILD/bin/$cmd" "./cmd/$cmd"
	mv -f "$BUILD/bin/$cmd" "$OUT/$cmd"
done

if [[ " ${BINS[*]} " == *" e2e.test "* ]] && ! good e2e.test; then
	log "building e2e.test $KUBE_VERSION"
	rm -f "$OUT/e2e.test.version"
	"${NICE[@]}" go test -c -trimpath -ldflags "$ldflags" -o "$BUILD/bin/e2e.test" ./test/e2e
	mv -f "$BUILD/bin/e2e.test" "$OUT/e2e.test"
	echo "$KUBE_VERSION" >"$OUT/e2e.test.version"
fi

if [[ " ${BINS[*]} " == *" ginkgo "* ]] && ! good ginkgo; then
	v=$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
	log "building ginkgo $v"
	"${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$BUILD/bin/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
	mv -f "$BUILD/bin/ginkgo" "$OUT/ginkgo"
	echo "${v#v}" >"$OUT/ginkgo.version"
fi

if ! good agnhost; then
	log "building agnhost $AGNHOST_VERSION"
	have=$(cat test/images/agnhost/VERSION)
	if [ "$have" != "$AGNHOST_VERSION" ]; then
		log "k8s.io/kubernetes@$KUBE_VERSION carries agnhost $have, AGNHOST_VERSION is $AGNHOST_VERSION: update the script"
		exit 1
	fi
	"${NICE[@]}" go build -trimpath -ldflags "-s -w -X main.Version=$AGNHOST_VERSION" \
		-o "$BUILD/bin/agnhost" ./test/images/agnhost
	mv -f "$BUILD/bin/agnhost" "$OUT/agnhost"
fi

if ! good etcd; then
	log "building etcd $ETCD_VERSION"
	mkdir -p "$BUILD/etcd"
	cd "$BUILD/etcd"
	cat >go.mod <<EOF
module etcdwrapper

go 1.26
EOF
	cat >main.go <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	# kubernetes' go.sum lists etcd and most of its graph: reuse it so those
	# modules are checked even with the checksum database off.
	cp "$BUILD/kubernetes/go.sum" go.sum
	go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
	"${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$BUILD/bin/etcd" .
	mv -f "$BUILD/bin/etcd" "$OUT/etcd"
fi
if [[ " ${BINS[*]} " == *" coredns "* ]] && ! good coredns; then
	log "building coredns $COREDNS_VERSION"
	mkdir -p "$BUILD/coredns"
	cd "$BUILD/coredns"
	cat >go.mod <<EOF
module corednswrapper

go 1.26
EOF
	cat >main.go <<'EOF'
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func main() { coremain.Run() }
EOF
	go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
	"${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$BUILD/bin/coredns" .
	mv -f "$BUILD/bin/coredns" "$OUT/coredns"
fi
if ! cached; then
	log "built binaries in $OUT do not report the pinned versions"
	exit 1
fi
log "built in $((SECONDS - start))s"
echo "$OUT"
