#!/usr/bin/env bash
# Runs every flint_keys test and prints one line per suite and a final
# "N passed, N failed". The regression, isolation and TAP suites are the
# Makefile's lists (`make installcheck` runs them as an ordinary user); this
# script adds what is special: it also works as root (servers and their
# clients run as the postgres user, through runuser), runs the regression
# suite again under valgrind, and runs the format check, the core unit tests
# (ctest) plain and under ASan + UBSan, the fuzzer (CMake, -DFLINT_FUZZ=ON),
# the Debian package check and the PGXN release check.
#
#   test/run_tests.sh            everything
#   test/run_tests.sh unit sql   only some suites (format unit asan fuzz sql valgrind isolation tap)
#   FLINT_FUZZ_SECONDS=60        how long the fuzzer runs (default 45)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-pg_config}"
PGBIN="$($PG_CONFIG --bindir)"
PGXS_DIR="$(cd "$(dirname "$($PG_CONFIG --pgxs)")/../.." && pwd)"
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(format unit asan fuzz sql valgrind isolation tap deb pgxn)

passed=0
failed=0
summary=()
record() { # suite status detail
    if [ "$2" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    summary+=("$(printf '%-10s %-6s %s' "$1" "$2" "$3")")
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# PostgreSQL refuses to run as root: servers and their clients run as postgres then.
RUNNER=()
if [ "$(id -u)" = 0 ]; then RUNNER=(runuser -u postgres --); fi

WORK="$(mktemp -d /tmp/flint_tests.XXXXXX)"
cleanup() { [ -n "${FLINT_KEEP_WORK:-}" ] && echo "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
# Servers and tests run as postgres when we are root: give them a readable copy.
cp -r "$ROOT/sql" "$ROOT/expected" "$ROOT/test" "$ROOT/scripts" "$ROOT/examples" "$ROOT/contrib" "$ROOT/README.md" "$WORK/"
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK"

echo "== building and installing the extension"
(cd "$ROOT" && make -s PG_CONFIG="$PG_CONFIG" >/dev/null && as_root make -s install PG_CONFIG="$PG_CONFIG" >/dev/null) || {
    echo "build failed"; exit 1; }

# The tests are the Makefile's lists (REGRESS, ISOLATION, TAP_TESTS): every
# sql/*.sql, test/isolation/specs/*.spec and test/t/*.pl, in that order.
tests_in() { # DIR EXT: the names of DIR/*.EXT without the extension, sorted as make sorts
    (cd "$1" && LC_ALL=C ls -- *."$2" | sed "s/\.$2\$//" | LC_ALL=C sort | xargs)
}

# run_regress NAME BINDIR: the regression suite (sql/, with the extension
# created by pg_regress as in the Makefile's REGRESS_OPTS) on a throwaway
# server run from BINDIR's binaries; results in $WORK/NAME, output in
# $WORK/NAME.log. (PGCTLTIMEOUT: a server under valgrind takes long to start.)
run_regress() {
    mkdir -p "$WORK/$1"
    [ "$(id -u)" = 0 ] && chown postgres "$WORK/$1"
    (cd "$WORK" && "${RUNNER[@]}" env PGCTLTIMEOUT=600 "$PGXS_DIR/src/test/regress/pg_regress" --bindir="$2" \
        --inputdir=. --load-extension=flint_keys --temp-instance="$WORK/tmp_$1" --temp-config=test/regress.conf \
        --encoding=UTF8 --no-locale --dbname=contrib_regression --outputdir="$WORK/$1" \
        $(tests_in "$WORK/sql" sql) >"$WORK/$1.log" 2>&1)
}

# report_regress SUITE STATUS OUT: records a pg_regress-style run whose output
# is OUT.log and results directory OUT, showing the diffs when it failed.
report_regress() {
    if [ "$2" = 0 ]; then
        record "$1" ok "$(grep -E 'tests passed' "$3.log" | tr -d '=' | xargs)"
    else
        cat "$3.log"; [ -f "$3/regression.diffs" ] && head -200 "$3/regression.diffs"
        record "$1" FAILED "$(grep -E 'failed' "$3.log" | tail -1 | tr -d '=' | xargs)"
    fi
    grep -E '^(test|ok|not ok)' "$3.log" | sed 's/^/  /'
}

for suite in "${SUITES[@]}"; do
    case "$suite" in
    unit)
        echo "== unit: GoogleTest (ctest)"
        build="$ROOT/build"
        if cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE=Release >"$WORK/cmake.log" 2>&1 &&
            cmake --build "$build" -j"$(nproc)" >>"$WORK/cmake.log" 2>&1; then
            if (cd "$build" && ctest --output-on-failure 2>&1 | tee "$WORK/ctest.log" | tail -3); then
                grep -q "100% tests passed" "$WORK/ctest.log" && record unit ok "$(grep 'tests passed' "$WORK/ctest.log")" ||
                    record unit FAILED "$(grep 'tests passed' "$WORK/ctest.log")"
            else record unit FAILED "ctest"; fi
        else
            tail -30 "$WORK/cmake.log"; record unit FAILED "build"
        fi
        ;;
    format)
        echo "== format: clang-format --dry-run"
        if (cd "$ROOT" && make -s format-check >"$WORK/format.log" 2>&1); then
            record format ok "sources match .clang-format"
        else
            head -40 "$WORK/format.log"; record format FAILED "run: clang-format -i src/*/*.[ch]pp test/*/*.cpp"
        fi
        ;;
    asan)
        echo "== asan: unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
        build="$ROOT/build-asan"
        if cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DFLINT_SANITIZE=ON -DFLINT_BENCHMARKS=OFF \
            -DCMAKE_CXX_COMPILER=clang++ >"$WORK/asan.log" 2>&1 && cmake --build "$build" -j"$(nproc)" >>"$WORK/asan.log" 2>&1 &&
            (cd "$build" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure >>"$WORK/asan.log" 2>&1); then
            record asan ok "$(grep 'tests passed' "$WORK/asan.log")"
        else
            tail -40 "$WORK/asan.log"; record asan FAILED "$(grep 'tests passed' "$WORK/asan.log" || echo build)"
        fi
        ;;
    fuzz)
        secs="${FLINT_FUZZ_SECONDS:-45}"
        echo "== fuzz: libFuzzer on the token and scope parsers, ${secs}s (ASan + UBSan)"
        mkdir -p "$WORK/fuzz/corpus" && cp "$ROOT"/test/fuzz/corpus/* "$WORK/fuzz/corpus/"
        build="$ROOT/build-fuzz"
        if cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DFLINT_FUZZ=ON -DFLINT_BENCHMARKS=OFF \
            -DCMAKE_CXX_COMPILER=clang++ >"$WORK/fuzz.log" 2>&1 &&
            cmake --build "$build" --target fuzz_parsers -j"$(nproc)" >>"$WORK/fuzz.log" 2>&1 &&
            (cd "$WORK/fuzz" && "$build/fuzz_parsers" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
                -artifact_prefix="$WORK/fuzz/" corpus >>"$WORK/fuzz.log" 2>&1); then
            record fuzz ok "$(grep -E '^stat::number_of_executed_units' "$WORK/fuzz.log" | awk '{print $2}') inputs, no crash"
        else
            tail -40 "$WORK/fuzz.log"; ls "$WORK"/fuzz/crash-* 2>/dev/null && xxd "$WORK"/fuzz/crash-* | head
            record fuzz FAILED "crash or build failure (see above)"
        fi
        ;;
    sql)
        echo "== sql: pg_regress"
        run_regress sql "$PGBIN"
        report_regress sql $? "$WORK/sql"
        ;;
    valgrind)
        # The regression suite again, against a server whose every process
        # (postmaster, backends, the log worker) runs under memcheck: the C++
        # layer's memory errors inside Postgres, which the unit-test ASan run
        # cannot see. Any report not in test/valgrind.supp fails the suite.
        echo "== valgrind: pg_regress against a server under valgrind memcheck"
        mkdir -p "$WORK/vgbin" "$WORK/vglogs"
        for f in "$PGBIN"/*; do ln -sf "$f" "$WORK/vgbin/"; done
        rm "$WORK/vgbin/postgres"
        cat >"$WORK/vgbin/postgres" <<VG
#!/bin/sh
exec valgrind --quiet --tool=memcheck --leak-check=no --track-origins=yes --num-callers=30 --error-limit=no \\
    --suppressions="$WORK/test/valgrind.supp" --log-file="$WORK/vglogs/vg.%p.log" "$PGBIN/postgres" "\$@"
VG
        chmod 755 "$WORK/vgbin/postgres"
        [ "$(id -u)" = 0 ] && chown -R postgres "$WORK/vgbin" "$WORK/vglogs"
        run_regress vg "$WORK/vgbin"
        regress=$?
        processes=$(ls "$WORK/vglogs" | wc -l)
        reports=$(cat "$WORK"/vglogs/*.log 2>/dev/null | grep -cE '^==[0-9]+== [A-Z]')
        if [ "$regress" = 0 ] && [ "$processes" -gt 3 ] && [ "$reports" = 0 ]; then
            record valgrind ok "$(grep -E 'tests passed' "$WORK/vg.log" | tr -d '=' | xargs), $processes server processes, no memcheck report"
        else
            cat "$WORK/vg.log"; cat "$WORK"/vglogs/*.log | head -200
            record valgrind FAILED "pg_regress exit $regress, $reports memcheck reports in $processes processes"
        fi
        ;;
    isolation)
        echo "== isolation: pg_isolation_regress"
        (cd "$WORK" && "${RUNNER[@]}" "$PGXS_DIR/src/test/isolation/pg_isolation_regress" \
            --bindir="$PGBIN" --inputdir=test/isolation --temp-instance="$WORK/tmp_iso" --temp-config=test/regress.conf \
            --encoding=UTF8 --no-locale --dbname=contrib_regression --outputdir="$WORK/iso" \
            $(tests_in "$WORK/test/isolation/specs" spec) >"$WORK/iso.log" 2>&1)
        report_regress isolation $? "$WORK/iso"
        ;;
    tap)
        echo "== tap: prove (PostgreSQL::Test::Cluster)"
        # As the Makefile's prove_installcheck: from the top of the tree, TESTDIR there.
        if (cd "$WORK" && "${RUNNER[@]}" env PATH="$PGBIN:$PATH" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
            PG_CONFIG="$PG_CONFIG" TESTDIR="$WORK" FLINT_SRC="$WORK" \
            prove -I "$PGXS_DIR/src/test/perl" test/t/*.pl \
            >"$WORK/tap.log" 2>&1) && grep -q "^Result: PASS" "$WORK/tap.log"; then
            record tap ok "$(grep -E '^Result|^Files=' "$WORK/tap.log" | head -1)"
        else
            record tap FAILED "$(grep -E '^Result|^Files=' "$WORK/tap.log" | head -1)"
            for f in "$WORK"/tmp_check/log/regress_log_*; do [ -f "$f" ] && tail -40 "$f"; done
        fi
        cat "$WORK/tap.log"
        ;;
    deb)
        # The Debian package (debian/, pg_buildext) built from a clean copy of
        # HEAD and checked by lintian, then installed with apt-get, the
        # regression suite run against the installed files, removed, and the
        # tree's build installed again (test/deb_installcheck.sh).
        echo "== deb: make deb (pg_buildext, lintian), apt-get install, pg_regress, apt-get remove"
        if (cd "$ROOT" && make -s deb >"$WORK/deb_build.log" 2>&1); then
            grep -E '^[EWIP]: |^lintian: no tags' "$WORK/deb_build.log" | sed 's/^/  lintian: /'
            bash "$ROOT/test/deb_installcheck.sh" "$ROOT" >"$WORK/deb.log" 2>&1
            status=$?
            grep -E '^(PASS|FAIL)  ' "$WORK/deb.log" | sed 's/^/  /'
            if [ "$status" = 0 ]; then
                record deb ok "$(sed -n 's/^built dist\///p' "$WORK/deb_build.log" | xargs): $(tail -1 "$WORK/deb.log" | sed 's/^deb_installcheck: //') checks"
            else
                cat "$WORK/deb.log"; record deb FAILED "$(tail -1 "$WORK/deb.log")"
            fi
        else
            tail -60 "$WORK/deb_build.log"; record deb FAILED "make deb (build or lintian)"
        fi
        ;;
    pgxn)
        # META.json against the PGXN Meta Spec, the release versions and what a
        # flint_keys release needs (check_meta.py, with the checker's own
        # self-test), make dist, then the zip as a PGXN user gets it
        # (test/pgxn/pgxn_installcheck.sh): its contents (no dotfile, no .ci/),
        # pgxn install, pgxn load into a throwaway cluster, pgxn check -d, and
        # the tree's build installed again.
        echo "== pgxn: test/pgxn/check_meta.py, make dist, pgxn install + load + check from the zip"
        if python3 "$ROOT/test/pgxn/test_check_meta.py" >"$WORK/pgxn_selftest.log" 2>&1 &&
            (cd "$ROOT" && make -s dist >"$WORK/pgxn.log" 2>&1); then
            cat "$WORK/pgxn.log"
            zip="$(sed -n 's/^built //p' "$WORK/pgxn.log" | tail -1)"
            selftests="$(grep -c '\.\.\. ok$' "$WORK/pgxn_selftest.log")"
            bash "$ROOT/test/pgxn/pgxn_installcheck.sh" "$ROOT" >"$WORK/pgxn_install.log" 2>&1
            status=$?
            grep -E '^(PASS|FAIL)  ' "$WORK/pgxn_install.log" | sed 's/^/  /'
            if [ "$status" = 0 ]; then
                record pgxn ok "$zip: $(sed -n 's/^pgxn_installcheck: //p' "$WORK/pgxn_install.log") checks; $selftests checker self-tests"
            else
                cat "$WORK/pgxn_install.log"; record pgxn FAILED "$(grep -E '^pgxn_installcheck: |^FAIL' "$WORK/pgxn_install.log" | tail -1)"
            fi
        else
            cat "$WORK/pgxn_selftest.log" "$WORK/pgxn.log" 2>/dev/null | tail -60
            record pgxn FAILED "check_meta.py or make dist (see above)"
        fi
        ;;
    *) echo "unknown suite $suite"; exit 2 ;;
    esac
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
