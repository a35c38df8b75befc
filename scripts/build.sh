#!/bin/sh
# Installs what is missing, then builds the engine, the XS module and vma.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
[ Makefile -nt Makefile.PL ] || perl Makefile.PL >/dev/null
make -j2 >/dev/null
