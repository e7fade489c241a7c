#!/usr/bin/env bash
# Builds the Debian package postgresql-15-flint-keys_<version>-<rev>_<arch>.deb
# with Debian's PostgreSQL tooling (debian/: dh --with pgxs_loop, pg_buildext)
# and leaves it in dist/. `make deb` runs this.
#
# - Builds from a clean copy of the committed HEAD (git archive) in a
#   temporary directory, never in the working tree, so uncommitted edits and
#   objects of a concurrent `make` neither leak into the package nor collide.
#   FLINT_DEB_REF=<commit> builds another commit.
# - The upstream version is flint_keys.control's default_version: the build
#   fails when debian/changelog's top entry says otherwise (bump both together;
#   test/pgxn/check_meta.py checks META.json too).
# - Runs lintian on the .deb and fails on any error; warnings are printed.
# Needs: debhelper, postgresql-server-dev-15, postgresql-server-dev-all,
# libssl-dev, lintian (scripts/install_deps.sh installs them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REF="${FLINT_DEB_REF:-HEAD}"
cd "$ROOT"

commit="$(git rev-parse --verify "$REF^{commit}")"
version="$(git show "$commit:flint_keys.control" | sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p")"
[ -n "$version" ] || { echo "build_deb: no default_version in flint_keys.control" >&2; exit 1; }

work="$(mktemp -d /tmp/flint_deb.XXXXXX)"
trap 'rm -rf "$work"' EXIT
src="$work/flint-keys-$version"
mkdir "$src"
git archive --format=tar "$commit" | tar -x -C "$src"
cd "$src"

# debian/changelog must describe this upstream version: <default_version>-<debian revision>.
deb_version="$(dpkg-parsechangelog -S Version)"
if [ "${deb_version%-*}" != "$version" ]; then
    echo "build_deb: debian/changelog is at $deb_version but flint_keys.control's default_version is '$version'." >&2
    echo "  Add a debian/changelog entry for $version-1 (and set META.json's versions to the same release)." >&2
    exit 1
fi

echo "== building postgresql-15-flint-keys $deb_version from $(git -C "$ROOT" rev-parse --short "$commit") in $src"
# -b: binary packages only; -us -uc: unsigned. Rules-Requires-Root: no, so no fakeroot.
if ! dpkg-buildpackage -b -us -uc >"$work/build.log" 2>&1; then
    tail -60 "$work/build.log"
    echo "build_deb: dpkg-buildpackage failed (log above)" >&2
    exit 1
fi

debs=("$work"/postgresql-*-flint-keys_"$deb_version"_*.deb)
[ -f "${debs[0]}" ] || { echo "build_deb: no .deb produced" >&2; exit 1; }

# Every install and upgrade script of the source must be in the package, and
# the examples.
for deb in "${debs[@]}"; do
    contents="$(dpkg-deb -c "$deb" | awk '{print $NF}')"
    for f in flint_keys.control flint_keys--*.sql; do
        grep -q "/share/postgresql/[0-9]*/extension/$f\$" <<<"$contents" || {
            echo "build_deb: $f missing from $(basename "$deb")" >&2; exit 1; }
    done
    grep -q '/lib/postgresql/[0-9]*/lib/flint_keys.so$' <<<"$contents" || {
        echo "build_deb: flint_keys.so missing from $(basename "$deb")" >&2; exit 1; }
    # The exporter's files and the example app, as examples (debian/rules).
    pkg="$(dpkg-deb -f "$deb" Package)"
    for f in contrib/postgres_exporter/* examples/payments_api/*; do
        grep -q "^\./usr/share/doc/$pkg/examples/${f#*/}\$" <<<"$contents" || {
            echo "build_deb: $f missing from $(basename "$deb") (usr/share/doc/$pkg/examples/${f#*/})" >&2; exit 1; }
    done
done

echo "== lintian"
# --fail-on error: errors fail the build; warnings and info are shown.
lintian --fail-on error --display-info "${debs[@]}" | tee "$work/lintian.log" || {
    echo "build_deb: lintian found errors" >&2; exit 1; }
[ -s "$work/lintian.log" ] || echo "lintian: no tags"

mkdir -p "$ROOT/dist"
rm -f "$ROOT"/dist/postgresql-*-flint-keys_*.deb "$ROOT"/dist/postgresql-*-flint-keys_*.commit
cp "${debs[@]}" "$ROOT/dist/"
# The commit each .deb was built from, for test/deb_installcheck.sh.
for deb in "${debs[@]}"; do
    echo "$commit" >"$ROOT/dist/$(basename "${deb%.deb}").commit"
done
cp "$work/lintian.log" "$ROOT/dist/lintian.txt"
for deb in "${debs[@]}"; do
    echo "built dist/$(basename "$deb")"
done
