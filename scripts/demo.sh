#!/bin/sh
# The main job: builds everything, then backs up a sample VM running on a real
# QEMU through the plugin into demo-output/ (or DEMO_OUTPUT), verifies and
# extracts the archive, compares the disks and prints the log.
set -eu
cd "$(dirname "$0")/.."
scripts/build.sh
exec perl scripts/upstream-demo.pl "${DEMO_OUTPUT:-demo-output}"
