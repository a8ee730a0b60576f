#!/usr/bin/env bash
# Installs what the local cluster (scripts/cluster.sh) needs on a Debian
# machine, and nothing when it is all there already: the container runtime
# (containerd, runc), the CNI plugins, the tools the nodes and kube-proxy
# call, and what the test images are made of (busybox-static, curl, a C
# compiler for the pause binary).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

have containerd || need+=(containerd)
have ctr || need+=(containerd)
have runc || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
have iptables || need+=(iptables)
have conntrack || need+=(conntrack)
# The static build: it is copied alone into the test images.
installed busybox-static || need+=(busybox-static)
have curl || need+=(curl)
# For the agnhost image: busybox 1.35's wget crashes with -T, and its nc
# lacks -z and -v, which e2e tests use.
have wget || need+=(wget)
[ -x /bin/nc.openbsd ] || need+=(netcat-openbsd)
# dig, for the DNS tests' clients.
have dig || need+=(bind9-dnsutils)
have openssl || need+=(openssl)
have nsenter || need+=(util-linux)
have gcc || need+=(gcc)
installed libc6-dev || need+=(libc6-dev)
have ip || need+=(iproute2)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages: ${need[*]} (run as root, or: apt-get install ${need[*]})" >&2
	exit 1
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
