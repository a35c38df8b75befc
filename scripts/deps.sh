#!/bin/sh
# Installs the Debian 12 packages the build, the tests and the demo need, as
# root and non-interactively; does nothing (fast) when all are present, and
# stops rather than let apt remove a package.
set -eu

packages="
    build-essential g++ make pkg-config perl libperl-dev
    libjson-c-dev uuid-dev libssl-dev catch2 libjson-perl
    zstd gzip pigz lzop libio-pty-perl
    qemu-system-x86 qemu-utils
    clang libclang-rt-14-dev
    libnbd-dev libnbd-bin fuse3 nbdkit nbdkit-plugin-dev e2fsprogs
    debhelper dpkg-dev fakeroot lintian debootstrap xfsprogs btrfs-progs
"

missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $packages 2>/dev/null |
    awk '$1 != "ii" { print $2 }')
# dpkg-query prints nothing for packages it has never heard of
for pkg in $packages; do
    dpkg-query -W "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
# a name an installed package provides counts as there: on a Proxmox VE
# node pve-qemu-kvm stands for Debian's QEMU packages (and conflicts with
# them)
provided=$(dpkg-query -W -f='${db:Status-Abbrev} ${Provides}\n' |
    awk '$1 == "ii" { $1 = ""; print }' | tr ',' '\n' | sed 's/(.*//; s/ //g')
missing=$(echo $missing | tr ' ' '\n' | sort -u | grep -vxF "$provided" | tr '\n' ' ')

[ -z "${missing# }" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages:$missing; run as root to install them" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# never at the cost of a package already there (Proxmox's own, say)
apt-get install -y -q --no-install-recommends --no-remove $missing
