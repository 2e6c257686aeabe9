#!/usr/bin/env bash
# Builds a meshnet e2e guest image from Debian's packages, offline but for Debian's archive.
#   build.sh SUITE OUTDIR PACKAGES_FILE
# Writes OUTDIR/root.img (ext4, the whole root file system), OUTDIR/vmlinuz and
# OUTDIR/initrd.img (booted with qemu -kernel/-initrd, root=/dev/vda). The guest configures
# itself at boot from its kernel command line (mn.host, mn.addr, mn.key: see meshnet-guest-setup
# below), so one image serves every guest and every run. The harness (e2e/harness/vmimage.go)
# caches OUTDIR by a hash of this script, the package list and the suite.
set -euo pipefail
suite=$1 out=$2 pkgfile=$3

pkgs=$(grep -v '^[[:space:]]*#' "$pkgfile" | grep -v '^[[:space:]]*$' | paste -sd, -)
case $suite in
# Since trixie, docker.io no longer brings the CLI (package docker-cli).
bookworm) ;;
*) pkgs="$pkgs,docker-cli" ;;
esac

tmp=$(mktemp -d /var/tmp/meshnet-vm-image.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root

# The setup unit and script the customize hook installs.
cat >"$tmp/meshnet-guest-setup" <<'SETUP'
#!/bin/sh
# Gives this guest its identity from the kernel command line: hostname (mn.host), underlay
# address on eth0 (mn.addr, CIDR), root's SSH key (mn.key, base64 of an authorized_keys line).
# No default route: nothing a test does may leave the underlay.
set -eu
for w in $(cat /proc/cmdline); do
	case $w in
	mn.host=*) host=${w#mn.host=} ;;
	mn.addr=*) addr=${w#mn.addr=} ;;
	mn.key=*) key=${w#mn.key=} ;;
	esac
done
echo "${host:?no mn.host}" >/etc/hostname
hostname "$host"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$host" >/etc/hosts
mkdir -p -m 700 /root/.ssh
echo "${key:?no mn.key}" | base64 -d >/root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ip link set lo up
ip link set eth0 up
ip addr replace "${addr:?no mn.addr}" dev eth0
echo "MESHNET-GUEST: $host network up at $addr" >/dev/ttyS0
SETUP
cat >"$tmp/meshnet-guest.service" <<'UNIT'
[Unit]
Description=meshnet e2e guest identity (hostname, address, SSH key from the kernel command line)
DefaultDependencies=no
After=systemd-udevd.service systemd-udev-trigger.service local-fs.target
Wants=systemd-udev-trigger.service
Before=network.target ssh.service docker.service containerd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/meshnet-guest-setup

[Install]
WantedBy=multi-user.target
UNIT
cat >"$tmp/engine-ready.conf" <<'DROPIN'
# Tells the console (and so the harness's progress line) when the engine answers.
[Service]
ExecStartPost=/bin/sh -c 'echo "MESHNET-GUEST: docker ready" >/dev/ttyS0'
DROPIN

# br_netfilter is loaded at boot: engine 20.10 loads it itself, engines from 28 only when
# they need it, and many hosts have it on for other reasons (Kubernetes, firewalls). The
# suite runs on the harder case on every image (../shared/HOSTS.md, "Traps"), and
# TestHarnessSanity checks it.
mmdebstrap --variant=minbase --include="$pkgs" \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--customize-hook='printf "virtio_pci\nvirtio_blk\nvirtio_net\n" >>"$1/etc/initramfs-tools/modules"' \
	--customize-hook='chroot "$1" update-initramfs -u -k all' \
	--customize-hook="install -m 755 $tmp/meshnet-guest-setup \"\$1/usr/local/sbin/meshnet-guest-setup\"" \
	--customize-hook="install -m 644 $tmp/meshnet-guest.service \"\$1/etc/systemd/system/meshnet-guest.service\"" \
	--customize-hook='chroot "$1" systemctl enable meshnet-guest.service' \
	--customize-hook="mkdir -p \"\$1/etc/systemd/system/docker.service.d\" && install -m 644 $tmp/engine-ready.conf \"\$1/etc/systemd/system/docker.service.d/engine-ready.conf\"" \
	--customize-hook='echo br_netfilter >"$1/etc/modules-load.d/meshnet-e2e.conf"' \
	--customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$1/etc/fstab"' \
	--customize-hook='echo "PermitRootLogin prohibit-password" >"$1/etc/ssh/sshd_config.d/meshnet.conf"; echo "UseDNS no" >>"$1/etc/ssh/sshd_config.d/meshnet.conf"' \
	--customize-hook='rm -f "$1/etc/hostname"; : >"$1/etc/machine-id"' \
	"$suite" "$root"

mkdir -p "$out"
cp -L "$root/vmlinuz" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
cp -L "$root/initrd.img" "$out/initrd.img.tmp" && mv "$out/initrd.img.tmp" "$out/initrd.img"
chroot "$root" dpkg-query -W -f='${Version}' docker.io >"$out/engine-version"
ls "$root/lib/modules" >"$out/kernel-version"
rm -f "$out/root.img.tmp"
mkfs.ext4 -q -F -L root -d "$root" "$out/root.img.tmp" 4G
mv "$out/root.img.tmp" "$out/root.img"
