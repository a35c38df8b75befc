#!/bin/sh
# Every test: the prove suite and the Catch2 suite, the engine tests again
# under ASan + UBSan, a short fuzz run of the VMA reader, then the Debian
# package (build, contents, lintian, install over stand-ins of the stock
# packages, use outside the build tree, purge) on Debian 12 here and on
# Debian 13 in a trixie root, there with the build-time tests.
set -eu
cd "$(dirname "$0")/.."
scripts/build.sh
# one QEMU probe for the run: every real-QEMU test starts QEMU the same way
if options=$(scripts/qemu-probe); then
    export QEMU_ACCEL_OPTIONS="$options"
fi
make test
make asan-test
make fuzz-vma FUZZ_SECONDS=30
scripts/check-deb.sh
echo "all tests passed"
