#!/bin/sh
# Every test: the prove suite and the Catch2 suite, the engine tests again
# under ASan + UBSan, then the Debian package (build, contents, lintian,
# install, use outside the build tree).
set -eu
cd "$(dirname "$0")/.."
scripts/build.sh
make test
make asan-test
scripts/check-deb.sh
echo "all tests passed"
