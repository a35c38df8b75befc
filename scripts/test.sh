#!/bin/sh
# Every test: the prove suite and the Catch2 suite, the engine tests again
# under ASan + UBSan, a short fuzz run of the VMA reader, then the Debian
# package (build, contents, lintian, install over stand-ins of the stock
# files, use outside the build tree, purge).
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
