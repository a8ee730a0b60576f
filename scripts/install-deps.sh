#!/usr/bin/env bash
# Installs what building, testing and the demo need on a Debian machine, and
# nothing when it is all there already (so repeated runs cost a few checks).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

have clang || need+=(clang)
have llvm-strip || need+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -f /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)
have ip || need+=(iproute2)
have tc || need+=(iproute2)
have ethtool || need+=(ethtool)
have clang-format || need+=(clang-format)
have bpftool || need+=(bpftool)
have curl || need+=(curl)
have tcpdump || need+=(tcpdump)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages: ${need[*]} (run as root, or: apt-get install ${need[*]})" >&2
	exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
