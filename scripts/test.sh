#!/bin/sh
# Every test: the prove suite and the Catch2 suite, the engine's file tests
# on each build file system the host has, the engine tests again under
# ASan + UBSan, a short fuzz run of the VMA reader, then the Debian package
# (build with its tests on overlayfs, contents, lintian, install over
# stand-ins of the stock packages, use outside the build tree, purge) for
# Debian 12 and Debian 13, each in a debootstrap'd root of its own. On the
# host it installs only its own build and test dependencies (scripts/deps.sh).
# Ends with a table of the stages and their times.
set -eu
cd "$(dirname "$0")/.."

table=
started_all=$(date +%s)
minutes() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }
print_table() {
    printf '\n%-44s %7s\n' stage time
    printf '%s' "$table"
    printf '%-44s %7s\n' total "$(minutes $(($(date +%s) - started_all)))"
}
# stage NAME COMMAND...: runs COMMAND as one row of the table; the first
# failure ends the run, with the table so far.
stage() {
    name=$1
    shift
    started=$(date +%s)
    status=0
    "$@" || status=$?
    result=$(minutes $(($(date +%s) - started)))
    [ "$status" -eq 0 ] || result="$result  FAILED (exit $status)"
    table="$table$(printf '%-44s %7s' "$name" "$result")
"
    [ "$status" -eq 0 ] || { print_table; exit "$status"; }
}

# the test binaries too, on both cores (make test builds them one by one)
build() { scripts/build.sh && make -j2 build/engine-tests >/dev/null; }
stage "build (deps, engine, XS, vma, tests)" build
# one QEMU probe for the run: every real-QEMU test starts QEMU the same way
if options=$(scripts/qemu-probe); then
    export QEMU_ACCEL_OPTIONS="$options"
fi
stage "make test (prove + Catch2)" make test
stage "file tests (tmpfs overlay ext4 xfs btrfs)" scripts/check-filesystems.sh
stage "make asan-test" make -j2 asan-test
stage "make fuzz-vma (30 s)" make fuzz-vma FUZZ_SECONDS=30
stage "package on Debian 12 (bookworm root)" scripts/check-deb-root.sh bookworm
stage "package on Debian 13 (trixie root)" scripts/check-deb-root.sh trixie
print_table
echo "all tests passed"
