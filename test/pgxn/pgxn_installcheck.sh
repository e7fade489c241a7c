#!/usr/bin/env bash
# Tests the PGXN release zip (make dist: dist/flint_keys-<version>.zip of HEAD)
# as a PGXN user gets it, with the PGXN client (Debian package pgxnclient):
#
#  - the zip: META.json, LICENSE, the control file and every flint_keys--*.sql
#    of HEAD under one prefix, no dotfile or dot-directory (.ci/, .gitignore:
#    .gitattributes export-ignore), and test/pgxn/check_meta.py passes on the
#    zip's own files (its META.json describes what it holds);
#  - pgxn install ./<zip>: builds and installs the zip's tree (the installed
#    control file and scripts are the zip's bytes, the library is new);
#  - pgxn load on a throwaway cluster preloading flint_keys (flint.database set
#    to its database): CREATE EXTENSION at default_version, a key verifies and
#    the log worker writes its request-log row;
#  - pgxn check -d <that database> ./<zip>, while that cluster runs: `make
#    installcheck` of the zip's tree on temporary instances of its own; then
#    the cluster's database is untouched;
#  - finally `make install` of SOURCE_ROOT again, so the suites that follow use
#    the tree's build (on any exit, as test/deb_installcheck.sh does).
#
#   test/pgxn/pgxn_installcheck.sh [SOURCE_ROOT]     (default: this checkout)
#
# Everything runs from a scratch directory the postgres user can read, never
# from SOURCE_ROOT, so a checkout in a private directory passes too. As root
# (CI) the servers, pgxn load and pgxn check run as postgres (pgxn install as
# root); otherwise pgxn install and make install go through sudo.
# pgxn check's TAP run takes the tests of installing (FLINT_TAP_TESTS: the
# install scripts against the chain, the demo); the tap suite runs every TAP
# test once, and timing-bound ones are not run twice per CI.
# Prints PASS/FAIL per check and "N passed, N failed".
set -uo pipefail

SRC="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd)"
PG_CONFIG="$(command -v "${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}")"
PGBIN="$($PG_CONFIG --bindir)"
PKGLIB="$($PG_CONFIG --pkglibdir)"
EXTDIR="$($PG_CONFIG --sharedir)/extension"
PORT=54341
DB=flint_pgxn

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

WORK="$(mktemp -d /tmp/flint_pgxncheck.XXXXXX)"
chmod 755 "$WORK"
cd "$WORK" || exit 1
CLUSTER="$WORK/cluster"
installed_by_pgxn=""
restored=""
stop_cluster() {
    [ -f "$CLUSTER/data/postmaster.pid" ] &&
        "${RUNNER[@]}" "$PGBIN/pg_ctl" -D "$CLUSTER/data" -m fast -w stop >/dev/null 2>&1
    return 0
}
restore() {
    stop_cluster
    if [ -n "$installed_by_pgxn" ] && [ -z "$restored" ]; then
        restored=1
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

finish() {
    echo "pgxn_installcheck: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# The zip make dist builds from HEAD: flint_keys-<default_version as X.Y.Z>.zip.
control_version="$(git -C "$SRC" show HEAD:flint_keys.control | sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p")"
prefix="flint_keys-$(awk -F. '{ printf "%d.%d.%d", $1, $2, $3 }' <<<"$control_version")"
zip="$SRC/dist/$prefix.zip"
if [ -z "$control_version" ] || [ ! -f "$zip" ]; then
    check "found $zip (make dist) for HEAD's default_version '$control_version'" false
    finish
fi
if ! command -v pgxn >/dev/null; then
    check "the PGXN client (pgxn, Debian package pgxnclient: scripts/install_deps.sh)" false
    finish
fi
cp "$zip" "$WORK/"
# git archive writes the commit into the zip's comment: the files to expect are
# that commit's, even if HEAD has moved on since make dist.
commit="$(python3 -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).comment.decode())' "$WORK/$prefix.zip")"
if ! git -C "$SRC" rev-parse --verify -q "$commit^{commit}" >/dev/null; then
    check "the zip's comment names the commit it was built from (git archive), not '$commit'" false
    finish
fi
python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$WORK/$prefix.zip" >"$WORK/zip.txt"

echo "== the zip: $prefix.zip of ${commit:0:7}"
mapfile -t scripts < <(git -C "$SRC" ls-tree --name-only "$commit" | grep -E '^flint_keys--.*\.sql$')
holds_all() {
    local f ok=0
    for f in META.json LICENSE flint_keys.control "${scripts[@]}"; do
        grep -qxF "$prefix/$f" "$WORK/zip.txt" || { echo "      missing: $prefix/$f"; ok=1; }
    done
    return $ok
}
check "it holds META.json, LICENSE, flint_keys.control and the scripts of ${commit:0:7} (${scripts[*]})" holds_all
check "nothing outside $prefix/" bash -c "! grep -v '^$prefix/' '$WORK/zip.txt' | sed 's/^/      outside: /' | grep ."
check "no dotfile or dot-directory (.ci/, .gitignore, .clang-format, .gitattributes)" \
    bash -c "! grep -E '(^|/)\\.[^/]' '$WORK/zip.txt' | sed 's/^/      in the zip: /' | grep ."
mkdir "$WORK/unzipped"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$WORK/$prefix.zip" "$WORK/unzipped"
UNZ="$WORK/unzipped/$prefix"
python3 "$UNZ/test/pgxn/check_meta.py" "$UNZ" >"$WORK/check_meta.log" 2>&1
check "check_meta.py on the zip's own files: $(tail -1 "$WORK/check_meta.log")" test $? = 0 || cat "$WORK/check_meta.log"
provides="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["provides"]["flint_keys"]["file"])' "$UNZ/META.json")"
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"

echo "== pgxn install ./$prefix.zip"
touch "$WORK/before_install"
installed_by_pgxn=1
(cd "$WORK" && as_root env MAKEFLAGS="-j$(nproc)" pgxn install --pg_config "$PG_CONFIG" "./$prefix.zip") \
    >"$WORK/install.log" 2>&1
check "pgxn install ./$prefix.zip (build and make install of the zip's tree)" test $? = 0 || tail -40 "$WORK/install.log"
check "it installed a new $PKGLIB/flint_keys.so" test "$PKGLIB/flint_keys.so" -nt "$WORK/before_install"
zips_bytes() {
    local f ok=0
    for f in flint_keys.control "${scripts[@]}"; do
        cmp -s "$UNZ/$f" "$EXTDIR/$f" || { echo "      $EXTDIR/$f is not the zip's"; ok=1; }
    done
    return $ok
}
check "the installed control file and scripts are the zip's bytes" zips_bytes

echo "== pgxn load on a throwaway cluster (shared_preload_libraries = 'flint_keys', flint.database = '$DB')"
mkdir -p "$CLUSTER"
[ "$(id -u)" = 0 ] && chown postgres "$CLUSTER"
psql_c() { "${RUNNER[@]}" "$PGBIN/psql" -h "$CLUSTER" -p "$PORT" -U postgres -d "$DB" -XAtq -v ON_ERROR_STOP=1 "$@"; }
if "${RUNNER[@]}" "$PGBIN/initdb" -D "$CLUSTER/data" -A trust -U postgres -E UTF8 --no-locale >"$CLUSTER/initdb.log" 2>&1 &&
    printf "%s\n" "listen_addresses = ''" "unix_socket_directories = '$CLUSTER'" "port = $PORT" \
        "shared_preload_libraries = 'flint_keys'" "flint.database = '$DB'" "flint.log_flush_interval = 20ms" |
    "${RUNNER[@]}" tee -a "$CLUSTER/data/postgresql.conf" >/dev/null &&
    "${RUNNER[@]}" "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w start >/dev/null &&
    "${RUNNER[@]}" "$PGBIN/psql" -h "$CLUSTER" -p "$PORT" -U postgres -d postgres -Xqc "CREATE DATABASE $DB"; then
    "${RUNNER[@]}" pgxn load --pg_config "$PG_CONFIG" -h "$CLUSTER" -p "$PORT" -U postgres -d "$DB" "./$prefix.zip" \
        >"$WORK/load.log" 2>&1
    check "pgxn load -d $DB ./$prefix.zip exits 0" test $? = 0
    check "pgxn load took META.json's $provides as the extension's SQL (no \"doesn't seem SQL\" INFO)" \
        bash -c "! grep -i \"doesn't seem SQL\" '$WORK/load.log'" || cat "$WORK/load.log"
    # Query output only: stderr goes to a file, shown on failure.
    out="$(psql_c 2>"$WORK/smoke.err" <<SQL
SELECT extversion FROM pg_extension WHERE extname = 'flint_keys' \gset
INSERT INTO flint.merchants (name) VALUES ('Acme') RETURNING id AS acme \gset
SELECT key_id, secret FROM flint_create_key(:'acme', 'pgxn check', ARRAY['payments:write']) \gset
SELECT flint_verify_key(:'secret', 'payments:read', :'acme') = :'key_id' AS verified \gset
SELECT flint_flush_log() IS NULL AS flushed \gset
SELECT :'extversion' || ' ' || :'verified' || ' ' || count(*)
  FROM flint.request_log WHERE key_id = :'key_id' AND outcome = 'ok';
SQL
)"
    check "pgxn load created flint_keys $control_version: a key verifies, the log worker wrote its row" \
        test "$out" = "$control_version t 1" || cat <(echo "$out") "$WORK/load.log" "$WORK/smoke.err" | sed 's/^/      /'

    echo "== pgxn check -d $DB ./$prefix.zip (make installcheck of the zip's tree) while that cluster runs"
    (cd "$WORK" && "${RUNNER[@]}" env FLINT_TAP_TESTS="${FLINT_TAP_TESTS:-test/t/020_install_scripts.pl test/t/021_demo.pl}" \
        pgxn check --pg_config "$PG_CONFIG" -d "$DB" "./$prefix.zip") >"$WORK/check.log" 2>&1
    status=$?
    grep -E '^(test |ok |not ok |Result:|Files=)|tests? (passed|failed)' "$WORK/check.log" | sed 's/^/      /'
    suites_passed() { # pg_regress said so for the regression and isolation suites, and prove for TAP
        [ "$(grep -cE '(^| )All [0-9]+ tests passed' "$WORK/check.log")" = 2 ] &&
            grep -q '^Result: PASS' "$WORK/check.log"
    }
    check "pgxn check -d $DB exits 0: regression, isolation and TAP suites passed" \
        eval 'test $status = 0 && suites_passed' || {
        tail -60 "$WORK/check.log"; [ -f "$WORK/regression.diffs" ] && head -200 "$WORK/regression.diffs"; }
    untouched="$(psql_c -c "SELECT extversion || ' ' || count(*) FROM pg_extension, flint.request_log
                            WHERE extname = 'flint_keys' GROUP BY extversion" 2>&1)"
    check "the cluster's $DB still has flint_keys and its request-log row (pgxn check used its own instances)" \
        test "$untouched" = "$control_version 1" || echo "      $untouched"
else
    check "throwaway cluster started" false
    cat "$CLUSTER"/*.log 2>/dev/null | tail -30
fi
stop_cluster

restore
check "make install of $SRC put the tree's build back" cmp -s "$SRC/flint_keys.so" "$PKGLIB/flint_keys.so"
finish
