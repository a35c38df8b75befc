#!/bin/sh
# Builds the Debian package from a copy of the working tree, checks its files,
# runs lintian, installs it and uses the module from outside the build tree;
# on this machine's Debian release, then on Debian 13 (trixie) in a
# debootstrap'd root (scripts/check-deb-trixie.sh).
#   --this-release  only this machine's release (how the trixie root runs it)
#   --with-tests    run the build-time tests (make test) in dpkg-buildpackage
set -eu
cd "$(dirname "$0")/.."

other_releases=yes
build_options=nocheck
for arg; do
    case "$arg" in
        --this-release) other_releases= ;;
        --with-tests) build_options= ;;
        *) echo "usage: $0 [--this-release] [--with-tests]" >&2; exit 2 ;;
    esac
done
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
say() { echo "check-deb ($release): $*"; }
fail() { echo "check-deb ($release): $*" >&2; exit 1; }

work=$(mktemp -d /tmp/check-deb.XXXXXX)
pkg=libpve-vzdump-qemuserver-perl
plugin=/usr/share/perl5/PVE/VZDump/QemuServer.pm
installed=
standins=
cleanup() {
    [ -z "$installed" ] || dpkg --purge "$pkg" >/dev/null
    [ -z "$standins" ] || dpkg --purge $standins >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# the tracked and new files, not the build products of this tree; a tree
# without git (the export that check-deb-trixie.sh makes) is all source
mkdir "$work/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$work/src"
else
    tar -cf - . | tar -xf - -C "$work/src"
fi

say "building the package${build_options:+ (no build-time tests)}"
started=$(date +%s)
(cd "$work/src" && DEB_BUILD_OPTIONS="$build_options parallel=2" dpkg-buildpackage -us -uc -b \
    >"$work/build.log" 2>&1) || { tail -n 60 "$work/build.log"; fail "dpkg-buildpackage failed"; }
say "built in $(($(date +%s) - started)) s"
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
    grep -qxF "$file" "$work/files" || fail "$file missing from $deb"
done
say "$(wc -l <"$work/files") entries, expected files present"
say "Depends: $(dpkg-deb -f "$deb" Depends)"
say "Breaks: $(dpkg-deb -f "$deb" Breaks)"

say "lintian"
lintian --fail-on error --suppress-tags initial-upload-closes-no-bugs "$deb"

# On a Proxmox node qemu-server owns the stock plugin and pve-qemu-kvm the
# stock vma; here stand-in packages of theirs do, unless the real ones are
# installed. qemu-server's stand-in comes in versions that our Breaks must
# admit and versions it must refuse, for the release this build serves.
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

real_node=
for owner in qemu-server:"$plugin" pve-qemu-kvm:/usr/bin/vma; do
    name=${owner%%:*} file=${owner#*:}
    if dpkg-query -W -f='${db:Status-Abbrev}' "$name" 2>/dev/null | grep -q '^ii'; then
        real_node=yes
        continue
    fi
    [ ! -e "$file" ] || fail "$file exists but $name is not installed; not overwriting it"
    version=${admitted%% *}
    [ "$name" = qemu-server ] || version=1.0+standin
    dpkg -i "$(standin_deb "$name" "$version" "$file")" >/dev/null
    standins="$standins $name"
done
plugin_before=$(md5sum <"$plugin")
vma_before=$(md5sum </usr/bin/vma)

say "installing over the stock plugin and vma"
dpkg -i "$deb" >/dev/null
installed=yes
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

if [ -z "$real_node" ]; then
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
fi

dpkg --purge "$pkg" >/dev/null
installed=
[ "$(md5sum <"$plugin")" = "$plugin_before" ] && [ "$(md5sum </usr/bin/vma)" = "$vma_before" ] ||
    fail "stock files not restored on purge"
[ -z "$(dpkg-divert --list "$pkg")" ] || fail "diversions left after purge"
say "purged, the stock plugin and vma are back"

[ -z "$other_releases" ] || [ "$release" = trixie ] || scripts/check-deb-trixie.sh
