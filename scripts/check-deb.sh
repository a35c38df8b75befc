#!/bin/sh
# Builds the Debian package from a copy of the working tree, checks its files,
# runs lintian, installs it and uses the module from outside the build tree.
set -eu
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/check-deb.XXXXXX)
pkg=libpve-vzdump-qemuserver-perl
installed=
cleanup() {
    [ -z "$installed" ] || dpkg --purge "$pkg" >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# the tracked and new files, not the build products of this tree
mkdir "$work/src"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$work/src"

echo "check-deb: building the package"
(cd "$work/src" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b \
    >"$work/build.log" 2>&1) || { tail -n 40 "$work/build.log"; exit 1; }
deb=$(ls "$work"/${pkg}_*.deb)

dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' >"$work/files"
perlarch=$(perl -MConfig -e 'print $Config{vendorarch}')
for file in /usr/bin/vma \
    "$perlarch/PVE/VZDump/QemuServer/Engine.pm" \
    "$perlarch/auto/PVE/VZDump/QemuServer/Engine/Engine.so" \
    /usr/share/man/man1/vma.1.gz \
    /usr/share/man/man3/PVE::VZDump::QemuServer::Engine.3pm.gz; do
    grep -qxF "$file" "$work/files" || { echo "check-deb: $file missing from $deb" >&2; exit 1; }
done
echo "check-deb: $(wc -l <"$work/files") entries, expected files present"

echo "check-deb: lintian"
lintian --fail-on error --suppress-tags initial-upload-closes-no-bugs "$deb"

echo "check-deb: installing"
dpkg -i "$deb" >/dev/null
installed=yes
got=$(cd / && perl -MPVE::VZDump::QemuServer::Engine -e \
    'print join("|", PVE::VZDump::QemuServer::Engine::render_bytes(1536, 1),
        PVE::VZDump::QemuServer::Engine::render_duration(90061))')
[ "$got" = "1.5 KiB|1d 1h 1m 1s" ] || { echo "check-deb: installed module returned '$got'" >&2; exit 1; }
echo "check-deb: installed module works outside the build tree ($got)"
