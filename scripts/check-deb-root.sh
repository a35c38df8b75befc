#!/bin/sh
# The Debian package check for one release (bookworm: Debian 12 / PVE 8,
# trixie: Debian 13 / PVE 9) in a debootstrap'd root of that release, so the
# host's own packages are never touched. scripts/check-deb.sh runs there: it
# builds the package with its build-time tests, checks its files, runs
# lintian, installs it over stand-in qemu-server and pve-qemu-kvm packages
# (diversions, the qemu-server versions its Breaks admits and refuses) and
# purges it.
#
# Each run works on an overlayfs over the cached root, as sbuild's overlay
# chroots do, in mount and PID namespaces of its own: the build and its tests
# run on overlayfs, whatever the run installs goes with its upper layer, and
# a run killed at any point leaves no mount or process behind and the cached
# root as it was.
# The roots are kept in $DEB_CHECK_ROOTS (default below); the first run of a
# release bootstraps its root from the Debian mirror this machine's apt uses
# (or $DEBIAN_MIRROR) and installs the build dependencies into it, later runs
# only copy the tree in. Needs root.
set -eu
cd "$(dirname "$0")/.."
self=$(pwd)/scripts/check-deb-root.sh

fail() { echo "check-deb-root: $*" >&2; exit 1; }

# Run by in_root as the first process of private mount and PID namespaces:
# mounts the overlay (layers in directory $2, if given) over the root $1, a
# /proc of the namespace and the kernel's /dev and /sys into it (QEMU needs
# /dev/kvm, vma mount loop devices and FUSE), and runs the rest of the
# arguments chrooted there. It stays the namespace's init, reaping what the
# tests orphan while it waits; when it exits, or is killed with its parent,
# the kernel kills every process left in the namespace and its mounts go.
if [ "${1:-}" = --in-namespace ]; then
    dir=$2 layers=$3
    shift 3
    if [ -n "$layers" ]; then
        mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layers/upper,workdir=$layers/work" \
            "$layers/merged" ||
            fail "overlayfs takes no upper layer on $(stat -f -c %T "$layers") ($layers):" \
                "set DEB_CHECK_ROOTS to a directory on ext4, xfs, btrfs or tmpfs"
        dir=$layers/merged
    fi
    mount -t proc proc "$dir/proc"
    mount --rbind /dev "$dir/dev"
    mount --rbind /sys "$dir/sys"
    chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
    exit
fi

[ $# -eq 1 ] && { [ "$1" = bookworm ] || [ "$1" = trixie ]; } ||
    { echo "usage: $0 bookworm|trixie" >&2; exit 2; }
release=$1
say() { echo "check-deb-root ($release): $*"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || fail "debootstrap missing (scripts/deps.sh installs it)"
roots=${DEB_CHECK_ROOTS:-/var/cache/pve-vzdump-qemu-engine}
case "$roots" in
    /?*) roots=${roots%/} ;;
    *) fail "DEB_CHECK_ROOTS '$roots' is not an absolute path" ;;
esac
root=$roots/$release
layers=

# Removes a directory of this script's; never across a mount (another tool's
# bind mount of the host's /dev into it, say).
remove_dir() {
    ! awk -v dir="$1/" 'index($2 "/", dir) == 1 { found = 1 } END { exit !found }' /proc/self/mounts ||
        fail "$1 has mounts; unmount them, then run again"
    rm -rf "$1"
}

# in_root LAYERS COMMAND...: COMMAND in the root, over an overlay in LAYERS
# if that is not empty.
in_root() {
    layers_dir=$1
    shift
    unshare --mount --propagation private --pid --fork --kill-child "$self" --in-namespace "$root" "$layers_dir" "$@"
}

cleanup() { [ -z "$layers" ] || remove_dir "$layers"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$roots"
# one run at a time uses a root
exec 9>"$root.lock"
flock 9
# the layers of runs killed before their cleanup
for stale in "$root".run.*; do
    [ ! -d "$stale" ] || remove_dir "$stale"
done

# The mirror (and security mirror) this machine's apt fetches its own release
# from, so the root comes from the same place; deb.debian.org otherwise.
host_mirror() {
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    apt-get indextargets --format '$(REPO_URI)' "Release: $codename$1" 'Target-Of: deb' \
        2>/dev/null | head -n 1
}

if [ ! -e "$root/.bootstrapped" ]; then
    mirror=${DEBIAN_MIRROR:-$(host_mirror "")}
    mirror=${mirror:-http://deb.debian.org/debian/}
    security_mirror=${DEBIAN_SECURITY_MIRROR:-$(host_mirror -security)}
    security_mirror=${security_mirror:-http://deb.debian.org/debian-security/}
    remove_dir "$root" # left half-made by an interrupted run
    say "bootstrapping a $release root in $root from $mirror"
    started=$(date +%s)
    debootstrap --variant=minbase "$release" "$root" "$mirror" >"$root.bootstrap.log" 2>&1 ||
        { tail -n 20 "$root.bootstrap.log"; fail "debootstrap of $release failed"; }
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $release main
deb $mirror $release-updates main
deb $security_mirror $release-security main
EOF
    touch "$root/.bootstrapped"
    say "bootstrapped in $(($(date +%s) - started)) s"
fi

# Build dependencies (debian/control, test ones included) and the tools
# check-deb.sh runs go into the root itself; apt only runs when one is missing.
deps=$root/tmp/check-deb-deps
remove_dir "$deps"
mkdir -p "$deps/debian"
cp debian/control "$deps/debian/"
if ! in_root "" sh -c "cd ${deps#"$root"} && dpkg-checkbuilddeps && dpkg-query -W lintian" \
    >/dev/null 2>&1; then
    say "installing the build dependencies in the root"
    started=$(date +%s)
    in_root "" sh -c "apt-get update -q && apt-get upgrade -y -q &&
        apt-get install -y -q --no-install-recommends build-essential lintian &&
        cd ${deps#"$root"} && apt-get build-dep -y -q --no-install-recommends ./" \
        >"$root.apt.log" 2>&1 ||
        { tail -n 20 "$root.apt.log"; fail "apt failed in the $release root"; }
    say "installed in $(($(date +%s) - started)) s"
fi
remove_dir "$deps"
say "$(in_root "" sh -c 'printf "Debian %s, perl %s, catch2 %s, json-c %s, libnbd %s\n" \
    "$(cat /etc/debian_version)" "$(perl -e "print \$^V")" "$(pkg-config --modversion catch2)" \
    "$(pkg-config --modversion json-c)" "$(pkg-config --modversion libnbd)"')"

# This run's layers: the tracked and new files of the tree (not its build
# products) in /build, and the mark that lets check-deb.sh run, go straight
# into the upper layer.
layers=$(mktemp -d "$root.run.XXXXXX")
mkdir -p "$layers/upper/build/src" "$layers/upper/etc" "$layers/work" "$layers/merged"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$layers/upper/build/src"
echo "scripts/check-deb-root.sh $release" >"$layers/upper/etc/pve-vzdump-qemu-engine-check-root"
in_root "$layers" sh -c "cd /build/src && scripts/check-deb.sh"
