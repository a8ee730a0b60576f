#!/usr/bin/env bash
# Fails when the committed bpf2go output differs from what bpf/ builds to
# now (the generated Go and objects must always match the C source), or
# when the Gateway API CRDs in manifests/ are not those of the
# sigs.k8s.io/gateway-api version in go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r bpf loader go.mod go.sum "$tmp"/
(cd "$tmp/loader" && go generate ./... >/dev/null)
stale=0
for f in loader/*_bpfel.go loader/*_bpfel.o; do
	if ! cmp -s "$f" "$tmp/$f"; then
		echo "stale generated file: $f (run 'make generate' and commit)" >&2
		stale=1
	fi
done
src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard
for f in "$src"/*.yaml; do
	name=$(basename "$f")
	[ "$name" = kustomization.yaml ] && continue
	if ! cmp -s "$f" "manifests/gateway-api/crds/$name"; then
		echo "stale Gateway API CRD: $name (run scripts/gateway-api-crds.sh and commit)" >&2
		stale=1
	fi
done
exit $stale
