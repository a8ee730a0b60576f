#!/usr/bin/env bash
# Fails when the committed bpf2go output differs from what bpf/ builds to
# now: the generated Go and objects must always match the C source.
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
exit $stale
