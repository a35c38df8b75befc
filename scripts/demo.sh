#!/bin/sh
# The main job: builds everything, makes a VMA archive of a generated sample
# disk, verifies it, extracts it and compares the restored disk with the source.
set -eu
cd "$(dirname "$0")/.."
scripts/build.sh

out=${DEMO_OUTPUT:-demo-output}
rm -rf "$out" && mkdir -p "$out"

# a 64 MiB disk: random data, a zero region, data again, a tail that ends
# inside a cluster
truncate -s $((64 * 1024 * 1024 + 1536)) "$out/disk-0.raw"
head -c 8M /dev/urandom | dd of="$out/disk-0.raw" bs=1M seek=1 conv=notrunc status=none
head -c 3M /dev/urandom | dd of="$out/disk-0.raw" bs=1M seek=40 conv=notrunc status=none
printf 'boot: order=scsi0\ncores: 1\nmemory: 512\nscsi0: local:100/disk-0.raw,size=64M\n' \
    >"$out/qemu-server.conf"

build/vma create -v -c "$out/qemu-server.conf" "$out/vzdump-qemu-100.vma" \
    drive-scsi0="$out/disk-0.raw"
build/vma list "$out/vzdump-qemu-100.vma"
build/vma verify -v "$out/vzdump-qemu-100.vma"
build/vma extract -v "$out/vzdump-qemu-100.vma" "$out/restore"

# the archive records sizes rounded up to 512 bytes: compare the source's bytes
# and check the padding is zero
size=$(stat -c %s "$out/disk-0.raw")
cmp -n "$size" "$out/disk-0.raw" "$out/restore/disk-drive-scsi0.raw"
echo "demo: restored disk matches the source ($size bytes)"
