#!/bin/sh
# The Debian package check on Debian 13 (trixie), from a Debian 12 machine:
# in a debootstrap'd trixie root, scripts/check-deb.sh builds the package with
# its build-time tests (the prove suite and the Catch2 suite against trixie's
# Perl, json-c, libnbd, catch2 v3 and QEMU), checks its files, runs lintian,
# installs it over stand-in qemu-server and pve-qemu-kvm packages (diversions,
# the qemu-server versions its Breaks admits and refuses), and purges it.
#
# The root is kept in $TRIXIE_ROOT (default below), outside the tree, so a
# second run only copies the tree in; the first run bootstraps it from the
# Debian mirror this machine's apt uses (or $DEBIAN_MIRROR). Needs root.
set -eu
cd "$(dirname "$0")/.."

root=${TRIXIE_ROOT:-/var/cache/pve-vzdump-qemu-engine/trixie}
case "$root" in
    /?*/?*) root=${root%/} ;;
    *) echo "check-deb-trixie: TRIXIE_ROOT '$root' is not an absolute path two levels deep" >&2; exit 2 ;;
esac
lock="$root.lock"
mounted=
export_dir=

if [ "$(id -u)" -ne 0 ]; then
    echo "check-deb-trixie: needs root (debootstrap, chroot, mounts)" >&2
    exit 1
fi
command -v debootstrap >/dev/null ||
    { echo "check-deb-trixie: debootstrap missing (scripts/deps.sh installs it)" >&2; exit 1; }

# The mirror (and security mirror) this machine's apt fetches its own release
# from, so the root comes from the same place; deb.debian.org otherwise.
host_mirror() {
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    apt-get indextargets --format '$(REPO_URI)' "Release: $codename$1" 'Target-Of: deb' \
        2>/dev/null | head -n 1
}
mirror=${DEBIAN_MIRROR:-$(host_mirror "")}
mirror=${mirror:-http://deb.debian.org/debian/}
security_mirror=${DEBIAN_SECURITY_MIRROR:-$(host_mirror -security)}
security_mirror=${security_mirror:-http://deb.debian.org/debian-security/}

# Every mount below $1, deepest first.
mounts_under() {
    awk -v dir="$1/" 'index($2 "/", dir) == 1 { print $2 }' /proc/self/mounts | sort -r
}

cleanup() {
    [ -z "$export_dir" ] || rm -rf "$export_dir"
    if [ -n "$mounted" ]; then
        for dir in $(mounts_under "$root"); do umount "$dir" 2>/dev/null || umount -l "$dir"; done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$(dirname "$root")"
# one run at a time uses the root
exec 9>"$lock"
flock 9

if [ ! -e "$root/.bootstrapped" ]; then
    # a root left half-made by an interrupted run: a mount still inside it
    # means something else uses it, so leave it alone
    if [ -n "$(mounts_under "$root")" ]; then
        echo "check-deb-trixie: $root is incomplete and has mounts; unmount them first" >&2
        exit 1
    fi
    rm -rf "$root"
    echo "check-deb-trixie: bootstrapping a trixie root in $root from $mirror"
    debootstrap --variant=minbase trixie "$root" "$mirror" >"$root.bootstrap.log" 2>&1 ||
        { tail -n 20 "$root.bootstrap.log"; echo "check-deb-trixie: debootstrap failed" >&2; exit 1; }
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror trixie main
deb $mirror trixie-updates main
deb $security_mirror trixie-security main
EOF
    touch "$root/.bootstrapped"
fi

# The tests start QEMU (KVM through /dev/kvm), qemu-nbd and loop devices: the
# root sees the host's /dev, /sys and a /proc of its own. rslave keeps our
# unmounts from reaching the host's mounts.
mounted=yes
mount -t proc proc "$root/proc"
for dir in dev sys; do
    mount --rbind "/$dir" "$root/$dir"
    mount --make-rslave "$root/$dir"
done

# the tracked and new files, not the build products of this tree
export_dir=$(mktemp -d "$root/tmp/check-deb.XXXXXX")
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$export_dir"
src=${export_dir#"$root"}

in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# Build dependencies (debian/control, test ones included) and the tools
# check-deb.sh runs; apt only runs when something is missing.
if ! in_root sh -c "cd $src && dpkg-checkbuilddeps" >/dev/null 2>&1 ||
    ! in_root dpkg-query -W lintian >/dev/null 2>&1; then
    echo "check-deb-trixie: installing the build dependencies in the root"
    in_root sh -c "apt-get update -q && apt-get upgrade -y -q &&
        apt-get install -y -q --no-install-recommends build-essential lintian &&
        cd $src && apt-get build-dep -y -q --no-install-recommends ./" \
        >"$root.apt.log" 2>&1 ||
        { tail -n 20 "$root.apt.log"; echo "check-deb-trixie: apt failed in the root" >&2; exit 1; }
fi
echo "check-deb-trixie: Debian $(cat "$root/etc/debian_version"), perl $(in_root perl -e 'print $^V')," \
    "catch2 $(in_root pkg-config --modversion catch2), json-c $(in_root pkg-config --modversion json-c)," \
    "libnbd $(in_root pkg-config --modversion libnbd)"

in_root sh -c "cd $src && scripts/check-deb.sh --this-release --with-tests"
