#!/usr/bin/env bash
# Installs what meshnet's build, demo and tests need on a Debian host, as root:
# Docker's engine (the e2e hosts run real engines), busybox and iputils' ping for the test image,
# the kernel tools the suite inspects with, the load generators `make bench`
# drives (iperf3, dnsperf), Debian's docker-compose (the compose e2e test),
# Debian's prometheus for promtool (the metrics tests check a scrape with
# `promtool check metrics`), qemu and mmdebstrap for the e2e suite on VMs (`make e2e-vm`
# builds guest images from Debian's packages and boots them), and the Go modules.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: run as root (it installs Debian packages)" >&2
	exit 1
fi
export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
	echo "install-deps: Go 1.26 or newer is needed (https://go.dev/dl/, unpack to /usr/local/go)" >&2
	exit 1
fi

pkgs=(docker.io busybox-static iputils-ping iproute2 iptables nftables kmod util-linux procps
	iperf3 dnsperf tcpdump dnsutils openssh-server openssh-client ca-certificates curl make
	docker-compose prometheus
	qemu-system-x86 qemu-utils mmdebstrap e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The engine in the root namespace is not used: every simulated host runs its
# own. Stop the packaged one if the package started it, so it does not load
# iptables rules into the root namespace that would filter the test underlay.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker 2>/dev/null; then
	systemctl stop docker docker.socket containerd 2>/dev/null || true
fi
# Only promtool is wanted from the prometheus package: a server the package
# started would scrape nothing of ours and hold port 9090.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
	systemctl disable --now prometheus 2>/dev/null || true
fi
modprobe br_netfilter 2>/dev/null || true
modprobe vxlan 2>/dev/null || true

cd "$(dirname "$0")/.."
go mod download
