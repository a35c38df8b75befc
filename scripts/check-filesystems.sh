#!/bin/sh
# The tests that meet the file system (the Catch2 suite, and the prove files
# of vma and the nbdkit plugin) with TMPDIR on each file system a Debian
# build may run on: tmpfs, overlayfs (over ext4, as sbuild's overlay chroots
# lay it out), ext4, xfs and btrfs, the last three on loop-mounted sparse
# images. The run has mount and PID namespaces of its own, so its mounts
# and any process a test leaves behind go with it however it ends. A file system this kernel lacks is named and left
# out. Needs root; builds what it runs. The package check builds
# with every test on overlayfs too (scripts/check-deb-root.sh).
set -eu
cd "$(dirname "$0")/.."
self=$(pwd)/scripts/check-filesystems.sh
filesystems="tmpfs overlay ext4 xfs btrfs"
say() { echo "check-filesystems: $*"; }
fail() { echo "check-filesystems: $*" >&2; exit 1; }

# mount_fs FS DIR: a fresh, empty FS mounted on DIR (images and layers beside
# it); fails where the kernel has no FS.
mount_fs() {
    mkdir -p "$2"
    case "$1" in
        tmpfs) mount -t tmpfs -o size=4g tmpfs "$2" ;;
        overlay)
            mount_fs ext4 "$2.layers" &&
                mkdir "$2.layers/lower" "$2.layers/upper" "$2.layers/work" &&
                mount -t overlay overlay -o \
                    "lowerdir=$2.layers/lower,upperdir=$2.layers/upper,workdir=$2.layers/work" "$2" ;;
        *)
            truncate -s 4G "$2.img"
            case "$1" in
                ext4) mkfs.ext4 -q -F "$2.img" ;;
                xfs) mkfs.xfs -q -f "$2.img" ;;
                btrfs) mkfs.btrfs -q -f "$2.img" >/dev/null ;;
            esac && mount -t "$1" -o loop "$2.img" "$2" ;;
    esac
}

if [ "${1:-}" = --in-namespace ]; then
    work=$2
    for fs in $filesystems; do
        modprobe -q "$fs" 2>/dev/null || true
        if ! grep -qw "$fs" /proc/filesystems; then
            say "$fs: this kernel has no $fs, left out"
            continue
        fi
        mount_fs "$fs" "$work/$fs" >"$work/$fs.log" 2>&1 ||
            { cat "$work/$fs.log"; fail "$fs: cannot mount one"; }
        tmp=$work/$fs/tmp
        mkdir -m 1777 "$tmp"
        say "$fs ($(findmnt -n -o FSTYPE,SOURCE --target "$tmp")): Catch2 suite, t/vma*.t, t/nbdkit-vma.t"
        TMPDIR=$tmp build/engine-tests >"$work/$fs.log" 2>&1 ||
            { cat "$work/$fs.log"; fail "$fs: the Catch2 suite failed"; }
        # what could not be checked on this file system, then the count
        { scripts/catch2-notes "$work/$fs.log"; tail -n 2 "$work/$fs.log"; } | sed "/^$/d; s|^|  |"
        TMPDIR=$tmp prove -b t/vma*.t t/nbdkit-vma.t >"$work/$fs.log" 2>&1 ||
            { cat "$work/$fs.log"; fail "$fs: the prove files failed"; }
        tail -n 1 "$work/$fs.log" | sed "s|^|  prove: |"
    done
    exit 0
fi

[ "$(id -u)" -eq 0 ] || fail "needs root (mounts)"
make -j2 all build/engine-tests >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
unshare --mount --propagation private --pid --fork --kill-child --mount-proc "$self" --in-namespace "$work"
