#!/usr/bin/env bash
# Installs what `make bench` needs beyond scripts/install-deps.sh: the peers
# (nginx, haproxy; kube-proxy's userland: iptables, nft, conntrack) and the
# load generators (wrk, h2load), and nothing when they are all there
# already. kube-proxy itself is built by scripts/kube-bins.sh. `make test`
# never runs this.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

have nginx || need+=(nginx-light)
have haproxy || need+=(haproxy)
have wrk || need+=(wrk)
have h2load || need+=(nghttp2-client)
have taskset || need+=(util-linux)
# kube-proxy execs iptables-restore (iptables mode; Debian's default
# backend is iptables-nft) and nft (nftables mode), and conntrack to
# flush stale UDP entries; the L4 benchmark flushes with conntrack -F.
have iptables || need+=(iptables)
have nft || need+=(nftables)
have conntrack || need+=(conntrack)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages: ${need[*]} (run as root, or: apt-get install ${need[*]})" >&2
	exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# The benchmark starts nginx and haproxy itself, pinned and with its own
# configs: keep the packages from starting system services on port 80.
# policy-rc.d is Debian's switch for that; leave an existing one alone.
policy=/usr/sbin/policy-rc.d
added_policy=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
