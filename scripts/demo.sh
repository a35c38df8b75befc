#!/bin/sh
# The main job: builds everything, then shows the engine at work.
set -eu
cd "$(dirname "$0")/.."
scripts/build.sh
perl -Mblib -MPVE::VZDump::QemuServer::Engine -e \
    'print "engine ", PVE::VZDump::QemuServer::Engine::version(), "\n"'
