#!/usr/bin/env bash
# Tests the built Debian package as a user gets it: apt-get install of
# dist/postgresql-15-flint-keys_*.deb, then, against the INSTALLED files only,
# the regression suite (pg_regress, every sql/ file as in the Makefile's
# REGRESS, a throwaway server preloading flint_keys with test/regress.conf)
# and the upgrade path 1.0 -> default_version on a throwaway cluster; then apt-get remove, and
# finally `make install` of the source tree again so the suites that follow
# use the tree's build. The package replaces the files in
# /usr/lib/postgresql/15 while it is installed; the restore runs on any exit.
#
#   test/deb_installcheck.sh [SOURCE_ROOT]     (default: this checkout)
#
# SOURCE_ROOT must hold dist/ with the .deb (scripts/build_deb.sh, `make deb`).
# Every check runs from a scratch directory the postgres user can read, never
# from SOURCE_ROOT (a checkout in a private directory must pass as well: psql
# run as postgres would warn that it cannot change directory), and compares
# query output only. The regression inputs come from the commit the package
# was built from (dist/<package>.commit, written by scripts/build_deb.sh; else
# HEAD). As root (CI) servers run as postgres; otherwise apt-get and make
# install go through sudo. Prints PASS/FAIL per check and "N passed, N
# failed".
set -uo pipefail

SRC="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)"
PKG=postgresql-15-flint-keys
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PGBIN="$($PG_CONFIG --bindir)"
PKGLIB="$($PG_CONFIG --pkglibdir)"
EXTDIR="$($PG_CONFIG --sharedir)/extension"
PGXS_DIR="$(cd "$(dirname "$($PG_CONFIG --pgxs)")/../.." && pwd)"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
RUNNER=()
[ "$(id -u)" = 0 ] && RUNNER=(runuser -u postgres --)

passed=0
failed=0
check() { # description, then a command: PASS or FAIL (and status 1, for `check ... || show_why`)
    local what="$1"; shift
    if "$@"; then echo "PASS  $what"; passed=$((passed + 1))
    else echo "FAIL  $what"; failed=$((failed + 1)); return 1; fi
}
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null)" = installed ]; }

WORK="$(mktemp -d /tmp/flint_debcheck.XXXXXX)"
chmod 755 "$WORK"
cd "$WORK" || exit 1
restored=""
restore() {
    if [ -z "$restored" ]; then
        restored=1
        if installed; then
            echo "== apt-get remove -y $PKG"
            as_root apt-get remove -y "$PKG" >"$WORK/remove.log" 2>&1 || cat "$WORK/remove.log"
        fi
        echo "== make install of $SRC (the tree's build again)"
        (cd "$SRC" && make -s PG_CONFIG="$PG_CONFIG" >"$WORK/make.log" 2>&1 &&
            as_root make -s install PG_CONFIG="$PG_CONFIG" >>"$WORK/make.log" 2>&1) || {
            tail -30 "$WORK/make.log"; return 1; }
    fi
}
cleanup() {
    restore || echo "FAIL  restoring the tree's build: run make install in $SRC"
    if [ -n "${FLINT_KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so an interrupted run still restores

shopt -s nullglob
debs=("$SRC"/dist/"$PKG"_*.deb)
shopt -u nullglob
if [ ${#debs[@]} -ne 1 ]; then
    echo "FAIL  expected exactly one $SRC/dist/${PKG}_*.deb (make deb), found ${#debs[@]}"
    echo "deb_installcheck: 0 passed, 1 failed"
    exit 1
fi
deb_version="$(dpkg-deb -f "${debs[0]}" Version)"
rel_deb="./dist/$(basename "${debs[0]}")"

# The files the package must bring: from the commit it was built from
# (scripts/build_deb.sh writes it next to the .deb; HEAD may have moved on).
ref=HEAD
[ -f "${debs[0]%.deb}.commit" ] && ref="$(cat "${debs[0]%.deb}.commit")"
if git -C "$SRC" rev-parse --verify -q "$ref^{commit}" >/dev/null; then
    echo "== the package's files to expect: from $(git -C "$SRC" rev-parse --short "$ref")"
    git -C "$SRC" archive "$ref" flint_keys.control 'flint_keys--*.sql' sql expected test/fixture.sql test/regress.conf \
        contrib/postgres_exporter examples/payments_api debian/copyright | tar -x -C "$WORK"
else
    mkdir -p "$WORK/test" "$WORK/contrib" "$WORK/examples" "$WORK/debian"
    cp -r "$SRC"/flint_keys.control "$SRC"/flint_keys--*.sql "$WORK/"
    cp -r "$SRC/sql" "$SRC/expected" "$WORK/"
    cp -r "$SRC/test/fixture.sql" "$SRC/test/regress.conf" "$WORK/test/"
    cp -r "$SRC/contrib/postgres_exporter" "$WORK/contrib/"
    cp -r "$SRC/examples/payments_api" "$WORK/examples/"
    cp "$SRC/debian/copyright" "$WORK/debian/"
fi
default_version="$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$WORK/flint_keys.control")"
mapfile -t scripts < <(cd "$WORK" && ls flint_keys--*.sql)
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"

# A package left installed by an interrupted run: start from a clean state.
if installed; then as_root apt-get remove -y "$PKG" >/dev/null 2>&1; fi

echo "== apt-get install -y $rel_deb"
(cd "$SRC" && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$rel_deb") >"$WORK/install.log" 2>&1
check "apt-get install $rel_deb" installed || cat "$WORK/install.log"
check "installed version is $deb_version (control default_version $default_version)" \
    test "$(dpkg-query -W -f='${Version}' "$PKG" 2>/dev/null)" = "$deb_version" -a "${deb_version%-*}" = "$default_version"

owned() { # every listed file exists and dpkg says the package owns it
    local f
    for f in "$@"; do
        if ! { [ -f "$f" ] && dpkg -S "$f" 2>/dev/null | grep -q "^$PKG:"; }; then
            echo "      not from $PKG: $f"; return 1
        fi
    done
}
check "the package owns $PKGLIB/flint_keys.so and $EXTDIR/flint_keys.control" \
    owned "$PKGLIB/flint_keys.so" "$EXTDIR/flint_keys.control"
check "the package owns every install and upgrade script: ${scripts[*]}" owned "${scripts[@]/#/$EXTDIR/}"
check "dpkg --verify: the installed files are the package's bytes" as_root dpkg --verify "$PKG"

# The exporter's files and the example app, installed as examples, byte for
# byte the source's (no compression, no rewriting), and the licence.
DOC="/usr/share/doc/$PKG"
dpkg -L "$PKG" >"$WORK/dpkg-L.txt" 2>&1
mapfile -t example_files < <(cd "$WORK" && find contrib/postgres_exporter examples/payments_api -type f | LC_ALL=C sort)
listed_as_examples() { # dpkg -L lists each source file F as $DOC/examples/<F without its first directory>
    local f ok=0
    [ ${#example_files[@]} -ge 5 ] || { echo "      only ${#example_files[@]} example files in the source"; return 1; }
    for f in "${example_files[@]}"; do
        grep -qxF "$DOC/examples/${f#*/}" "$WORK/dpkg-L.txt" || { echo "      dpkg -L $PKG does not list $DOC/examples/${f#*/}"; ok=1; }
    done
    return $ok
}
same_bytes() { # SOURCE INSTALLED...: pairs of files that must be identical
    local ok=0
    while [ $# -ge 2 ]; do
        cmp -s "$1" "$2" || { echo "      $2 differs from ${1#"$WORK"/} (or is missing)"; ok=1; }
        shift 2
    done
    return $ok
}
check "dpkg -L lists the exporter's files and the example app under $DOC/examples/: ${example_files[*]}" listed_as_examples
check "the installed examples/postgres_exporter/queries.yaml is byte-identical to contrib's" \
    same_bytes "$WORK/contrib/postgres_exporter/queries.yaml" "$DOC/examples/postgres_exporter/queries.yaml"
pairs=()
for f in "${example_files[@]}"; do pairs+=("$WORK/$f" "$DOC/examples/${f#*/}"); done
check "every installed example is byte-identical to the source's (none compressed)" same_bytes "${pairs[@]}"
check "$DOC/copyright is debian/copyright (License: PostgreSQL)" \
    same_bytes "$WORK/debian/copyright" "$DOC/copyright"

echo "== pg_regress (sql/) on a throwaway server preloading the installed flint_keys"
mkdir -p "$WORK/results"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/results"
(cd "$WORK" && "${RUNNER[@]}" env PGCTLTIMEOUT=120 "$PGXS_DIR/src/test/regress/pg_regress" --bindir="$PGBIN" \
    --temp-instance="$WORK/tmp_regress" --temp-config=test/regress.conf --encoding=UTF8 --no-locale \
    --dbname=contrib_regression --inputdir=. --load-extension=flint_keys --outputdir="$WORK/results" \
    $(cd "$WORK/sql" && LC_ALL=C ls -- *.sql | sed 's/\.sql$//' | xargs) >"$WORK/regress.log" 2>&1)
regress=$?
grep -E '^(test|ok|not ok)' "$WORK/regress.log" | sed 's/^/      /'
check "pg_regress: $(grep -E 'tests passed|failed' "$WORK/regress.log" | tail -1 | tr -d '=' | xargs)" test "$regress" = 0 || {
    cat "$WORK/regress.log"; [ -f "$WORK/results/regression.diffs" ] && head -200 "$WORK/results/regression.diffs"; }

echo "== upgrade path on a throwaway cluster (shared_preload_libraries = 'flint_keys')"
CLUSTER="$WORK/cluster"
mkdir -p "$CLUSTER"
[ "$(id -u)" = 0 ] && chown postgres "$CLUSTER"
psql_c() { "${RUNNER[@]}" "$PGBIN/psql" -h "$CLUSTER" -p 54339 -U postgres -d flint -XAtq -v ON_ERROR_STOP=1 "$@"; }
if "${RUNNER[@]}" "$PGBIN/initdb" -D "$CLUSTER/data" -A trust -U postgres -E UTF8 --no-locale >"$CLUSTER/initdb.log" 2>&1 &&
    printf "%s\n" "listen_addresses = ''" "unix_socket_directories = '$CLUSTER'" "port = 54339" \
        "shared_preload_libraries = 'flint_keys'" "flint.database = 'flint'" "flint.log_flush_interval = 20ms" |
    "${RUNNER[@]}" tee -a "$CLUSTER/data/postgresql.conf" >/dev/null &&
    "${RUNNER[@]}" "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w start >/dev/null &&
    "${RUNNER[@]}" "$PGBIN/psql" -h "$CLUSTER" -p 54339 -U postgres -d postgres -Xqc "CREATE DATABASE flint"; then
    versions_files="$(for s in "${scripts[@]}"; do s="${s#flint_keys--}"; s="${s%.sql}"; echo "${s##*--}"; done | sort -uV | xargs)"
    available="$(psql_c -c "SELECT version FROM pg_available_extension_versions WHERE name = 'flint_keys'" | xargs)"
    lists_all() { local v; for v in $versions_files; do [[ " $available " == *" $v "* ]] || return 1; done; }
    check "pg_available_extension_versions lists every shipped version: $versions_files" lists_all ||
        echo "      available: $available"
    # Query output only: stderr (a warning, a notice) goes to a file, shown on failure.
    out="$(psql_c 2>"$WORK/upgrade.err" <<SQL
CREATE EXTENSION flint_keys VERSION '1.0';
INSERT INTO flint.merchants (name) VALUES ('Acme') RETURNING id AS acme \gset
SELECT key_id, secret FROM flint_create_key(:'acme', 'deb check', ARRAY['payments:write']) \gset
ALTER EXTENSION flint_keys UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'flint_keys' \gset
SELECT flint_verify_key(:'secret', 'payments:read', :'acme') = :'key_id' AS verified \gset
SELECT flint_flush_log() IS NULL AS flushed \gset
SELECT :'extversion' || ' ' || :'verified' || ' ' || count(*)
  FROM flint.request_log WHERE key_id = :'key_id' AND outcome = 'ok';
SQL
)"
    check "CREATE EXTENSION 1.0, a key, ALTER EXTENSION UPDATE to $default_version, the key verifies, the log worker wrote its row" \
        test "$out" = "$default_version t 1" || cat <(echo "$out") "$WORK/upgrade.err" | sed 's/^/      /'
    "${RUNNER[@]}" "$PGBIN/pg_ctl" -D "$CLUSTER/data" -m fast -w stop >/dev/null 2>&1
else
    check "throwaway cluster started" false
    cat "$CLUSTER"/*.log 2>/dev/null | tail -30
fi
check "dpkg --verify after the tests: nothing replaced the package's files meanwhile" as_root dpkg --verify "$PKG"

echo "== apt-get remove -y $PKG"
as_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y "$PKG" >"$WORK/remove.log" 2>&1
not_installed() { ! installed; }
# Only the package's own files: the shared extension directory may hold
# others (a newer upgrade script someone's `make install` left there).
mapfile -t pkg_files < <(dpkg-deb -c "${debs[0]}" | awk '$1 !~ /^d/ { sub(/^\./, "", $NF); print $NF }')
gone() {
    local f
    for f in "${pkg_files[@]}"; do
        [ -e "$f" ] && { echo "      still there: $f"; return 1; }
    done
    return 0
}
check "apt-get remove $PKG" not_installed || cat "$WORK/remove.log"
check "its ${#pkg_files[@]} files are gone (flint_keys.so, the control file, the scripts, the docs)" gone

restore
check "make install of $SRC put the tree's build back" test -f "$PKGLIB/flint_keys.so" -a -f "$EXTDIR/flint_keys.control"

echo "deb_installcheck: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
