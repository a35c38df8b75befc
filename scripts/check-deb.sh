#!/bin/sh
# Builds the Debian package from a copy of the working tree, checks its files,
# runs lintian, installs it and uses the module from outside the build tree.
set -eu
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/check-deb.XXXXXX)
pkg=libpve-vzdump-qemuserver-perl
plugin=/usr/share/perl5/PVE/VZDump/QemuServer.pm
installed=
standins=
cleanup() {
    [ -z "$installed" ] || dpkg --purge "$pkg" >/dev/null
    for file in $standins; do rm -f "$file"; done
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
    "$(pkg-config nbdkit --variable=plugindir)/nbdkit-vma-plugin.so" \
    /usr/share/man/man1/nbdkit-vma-plugin.1.gz \
    "$plugin" \
    /usr/share/man/man3/PVE::VZDump::QemuServer::Engine.3pm.gz; do
    grep -qxF "$file" "$work/files" || { echo "check-deb: $file missing from $deb" >&2; exit 1; }
done
echo "check-deb: $(wc -l <"$work/files") entries, expected files present"

echo "check-deb: lintian"
lintian --fail-on error --suppress-tags initial-upload-closes-no-bugs "$deb"

# On a Proxmox node qemu-server owns the stock plugin and pve-qemu-kvm the
# stock vma; here stand-ins take their places, unless the real ones are there.
for file in "$plugin" /usr/bin/vma; do
    [ -e "$file" ] && continue
    mkdir -p "$(dirname "$file")"
    printf '#!/bin/sh\n# stock stand-in for %s\n' "$file" >"$file"
    chmod 755 "$file"
    standins="$standins $file"
done
plugin_before=$(md5sum <"$plugin")
vma_before=$(md5sum </usr/bin/vma)

echo "check-deb: installing over the stock plugin and vma"
dpkg -i "$deb" >/dev/null
installed=yes
diversions=$(dpkg-divert --list "$pkg" | wc -l)
[ "$diversions" -eq 2 ] || { echo "check-deb: expected 2 diversions, got $diversions" >&2; exit 1; }
[ "$(md5sum <"$plugin.stock")" = "$plugin_before" ] || { echo "check-deb: stock plugin not kept aside" >&2; exit 1; }
loaded=$(cd / && perl -e 'for (@INC) { my $f = "$_/PVE/VZDump/QemuServer.pm"; if (-f $f) { print $f; last } }')
[ "$loaded" = "$plugin" ] && cmp -s "$plugin" lib/PVE/VZDump/QemuServer.pm ||
    { echo "check-deb: vzdump would load '$loaded', not our plugin" >&2; exit 1; }
/usr/bin/vma 2>&1 | grep -q "usage: vma" || { echo "check-deb: /usr/bin/vma is not ours" >&2; exit 1; }
echo "check-deb: our plugin and vma are in place, the stock ones diverted"
got=$(cd / && perl -MPVE::VZDump::QemuServer::Engine -e \
    'print join("|", PVE::VZDump::QemuServer::Engine::render_bytes(1536, 1),
        PVE::VZDump::QemuServer::Engine::render_duration(90061))')
[ "$got" = "1.5 KiB|1d 1h 1m 1s" ] || { echo "check-deb: installed module returned '$got'" >&2; exit 1; }
echo "check-deb: installed module works outside the build tree ($got)"

dpkg --purge "$pkg" >/dev/null
installed=
[ "$(md5sum <"$plugin")" = "$plugin_before" ] && [ "$(md5sum </usr/bin/vma)" = "$vma_before" ] ||
    { echo "check-deb: stock files not restored on purge" >&2; exit 1; }
[ -z "$(dpkg-divert --list "$pkg")" ] || { echo "check-deb: diversions left after purge" >&2; exit 1; }
echo "check-deb: purged, the stock plugin and vma are back"
