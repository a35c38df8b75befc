#!/bin/sh
# Builds the Debian package in this tree with its build-time tests, checks
# its files, runs lintian, installs it over stand-ins of the stock packages,
# uses the module from outside the build tree and purges it. It installs and
# diverts system files, so it runs only in a root that
# scripts/check-deb-root.sh made for it, never on a host (a Proxmox node's
# live plugin and vma, say).
set -eu
cd "$(dirname "$0")/.."

release=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
say() { echo "check-deb ($release): $*"; }
fail() { echo "check-deb ($release): $*" >&2; exit 1; }
[ -e /etc/pve-vzdump-qemu-engine-check-root ] ||
    fail "not in a check root; run scripts/check-deb-root.sh bookworm|trixie instead"

work=$(mktemp -d /tmp/check-deb.XXXXXX)
pkg=libpve-vzdump-qemuserver-perl
plugin=/usr/share/perl5/PVE/VZDump/QemuServer.pm
# what the check installs goes with the root's overlay
trap 'rm -rf "$work"' EXIT

# the tree is the root's own export of the source (check-deb-root.sh), so
# the package builds in it and lands beside it, as in sbuild's /build
say "building the package with its tests on $(stat -f -c %T .)"
started=$(date +%s)
DEB_BUILD_OPTIONS="parallel=2" dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1 ||
    { tail -n 60 "$work/build.log"; fail "dpkg-buildpackage failed"; }
say "built in $(($(date +%s) - started)) s"
# what the build-time tests could not check here
scripts/catch2-notes "$work/build.log" | sort -u | sed 's/^/  /'
deb=$(ls ../${pkg}_*.deb)

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
    grep -qxF "$file" "$work/files" || fail "$file missing from $deb"
done
say "$(wc -l <"$work/files") entries, expected files present"
say "Depends: $(dpkg-deb -f "$deb" Depends)"
say "Breaks: $(dpkg-deb -f "$deb" Breaks)"

say "lintian"
lintian --fail-on error --suppress-tags initial-upload-closes-no-bugs "$deb"

# On a Proxmox node qemu-server owns the stock plugin and pve-qemu-kvm the
# stock vma; here stand-in packages of theirs do. qemu-server's stand-in
# comes in versions that our Breaks must admit and versions it must refuse,
# for the release this build serves.
case "$release" in
    bookworm) admitted="8.3.14 8.4.1" refused="8.3.13 9.2.6" ;;
    trixie) admitted="9.2.6 9.2.9" refused="9.2.5 9.3.0" ;;
    *) fail "no qemu-server versions known for Debian '$release'" ;;
esac

# A package NAME VERSION owning FILE, a script naming what it stands in for,
# and a file of its own: dpkg drops a package whose only file is diverted
# away from its database on the next unpack that shares a directory with it
# ("disappear"); the real packages own many files.
standin_deb() {
    dir="$work/standin/$1-$2"
    mkdir -p "$dir/DEBIAN" "$dir$(dirname "$3")" "$dir/usr/share/doc/$1"
    printf '#!/bin/sh\n# %s %s stand-in for %s\n' "$1" "$2" "$3" >"$dir$3"
    chmod 755 "$dir$3"
    echo "stand-in made by scripts/check-deb.sh" >"$dir/usr/share/doc/$1/README.stand-in"
    printf '%s\n' "Package: $1" "Version: $2" "Architecture: all" \
        "Maintainer: check-deb <root@localhost>" \
        "Description: stand-in for Proxmox's $1 (scripts/check-deb.sh)" >"$dir/DEBIAN/control"
    dpkg-deb --root-owner-group -b "$dir" "$dir.deb" >/dev/null
    echo "$dir.deb"
}

dpkg -i "$(standin_deb qemu-server "${admitted%% *}" "$plugin")" \
    "$(standin_deb pve-qemu-kvm 1.0+standin /usr/bin/vma)" >/dev/null
plugin_before=$(md5sum <"$plugin")
vma_before=$(md5sum </usr/bin/vma)

say "installing over the stock plugin and vma"
dpkg -i "$deb" >/dev/null
diversions=$(dpkg-divert --list "$pkg" | wc -l)
[ "$diversions" -eq 2 ] || fail "expected 2 diversions, got $diversions"
[ "$(md5sum <"$plugin.stock")" = "$plugin_before" ] || fail "stock plugin not kept aside"
[ "$(md5sum </usr/bin/vma.stock)" = "$vma_before" ] || fail "stock vma not kept aside"
loaded=$(cd / && perl -e 'for (@INC) { my $f = "$_/PVE/VZDump/QemuServer.pm"; if (-f $f) { print $f; last } }')
[ "$loaded" = "$plugin" ] && cmp -s "$plugin" lib/PVE/VZDump/QemuServer.pm ||
    fail "vzdump would load '$loaded', not our plugin"
/usr/bin/vma 2>&1 | grep -q "usage: vma" || fail "/usr/bin/vma is not ours"
say "our plugin and vma are in place, the stock ones diverted"
got=$(cd / && perl -MPVE::VZDump::QemuServer::Engine -e \
    'print join("|", PVE::VZDump::QemuServer::Engine::render_bytes(1536, 1),
        PVE::VZDump::QemuServer::Engine::render_duration(90061))')
[ "$got" = "1.5 KiB|1d 1h 1m 1s" ] || fail "installed module returned '$got'"
say "installed module works outside the build tree, perl $(perl -e 'print $^V') ($got)"

# an upgrade of qemu-server within the admitted range: its new plugin
# goes aside, ours stays in place
upgrade=${admitted##* }
dpkg -i "$(standin_deb qemu-server "$upgrade" "$plugin")" >/dev/null ||
    fail "qemu-server $upgrade refused, but our Breaks should admit it"
grep -q "qemu-server $upgrade stand-in" "$plugin.stock" ||
    fail "qemu-server $upgrade's plugin did not go to $plugin.stock"
cmp -s "$plugin" lib/PVE/VZDump/QemuServer.pm || fail "qemu-server $upgrade replaced our plugin"
plugin_before=$(md5sum <"$plugin.stock")
# dpkg unpacks a version that our Breaks refuses but will not configure
# it; installing the admitted one again is the way back
for version in $refused; do
    if dpkg -i "$(standin_deb qemu-server "$version" "$plugin")" >"$work/refused.log" 2>&1; then
        fail "qemu-server $version installed next to ours, but our Breaks should refuse it"
    fi
    grep -q "$pkg.* breaks qemu-server" "$work/refused.log" ||
        { cat "$work/refused.log"; fail "qemu-server $version failed, not for our Breaks"; }
    dpkg -i "$work/standin/qemu-server-$upgrade.deb" >/dev/null 2>&1 ||
        fail "qemu-server $upgrade did not install again after $version"
done
say "Breaks admits qemu-server $admitted and refuses $refused"

dpkg --purge "$pkg" >/dev/null
[ "$(md5sum <"$plugin")" = "$plugin_before" ] && [ "$(md5sum </usr/bin/vma)" = "$vma_before" ] ||
    fail "stock files not restored on purge"
[ -z "$(dpkg-divert --list "$pkg")" ] || fail "diversions left after purge"
say "purged, the stock plugin and vma are back"
