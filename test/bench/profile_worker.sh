#!/usr/bin/env bash
# Where the log worker's CPU goes: perf samples of the worker (call graphs)
# while pgbench verifies at full speed (2 clients, random keys of 10,000).
# Prints the worker's CPU µs per row and the top functions by self time and
# by inclusive time; writes the folded stacks for a flame graph.
#
#   bash test/bench/profile_worker.sh            15 s of load
#   PROFILE_SECS=30 bash test/bench/profile_worker.sh
#   PROFILE_COPY=1 bash test/bench/profile_worker.sh   the binary COPY insert (flint.log_direct_insert = off)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${BENCH_OUT:-$ROOT/test/bench/results}"
SECS="${PROFILE_SECS:-15}"
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
make -C "$ROOT" -s >/dev/null && "${SUDO[@]}" make -C "$ROOT" -s install >/dev/null
source "$ROOT/test/bench/common.sh"
DIR="$(mktemp -d /tmp/flint_profile.XXXXXX)"
trap 'cluster_stop; [ -n "${KEEP:-}" ] || rm -rf "$DIR"' EXIT
bench_cluster_start "$DIR"
echo "\\set n random(1, 10000)
SELECT flint_verify_key(tok, :scope, :merchant) FROM bench.keys WHERE n = :n;" >"$DIR/verify_random.sql"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"/*.sql
if [ -n "${PROFILE_COPY:-}" ]; then # the insert path before 1.3: binary COPY
    q -c "ALTER SYSTEM SET flint.log_direct_insert = off" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
fi
pid=$(q -c "SELECT worker_pid FROM flint_log_status()")
before=$(q -c "SELECT inserted FROM flint_log_status()")
read -r ut st < <(awk '{print $14, $15}' "/proc/$pid/stat")
"${CLUSTER_USER[@]}" "$PGBIN/pgbench" -h "$DIR" -p "$CLUSTER_PORT" -U postgres -n -M prepared -c 2 -j 2 -T "$SECS" \
    -D scope=payments:read -D merchant="$M" -f "$DIR/verify_random.sql" flint >"$DIR/pgbench.out" 2>&1 &
bench=$!
sleep 1
"${SUDO[@]}" perf record -q -F 999 -g -p "$pid" -o "$DIR/perf.data" -- sleep $((SECS - 2)) 2>/dev/null
wait "$bench"
q -c "SELECT flint_flush_log()" >/dev/null
after=$(q -c "SELECT inserted FROM flint_log_status()")
read -r ut2 st2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
rows=$((after - before))
tick=$(getconf CLK_TCK)
echo "pgbench: $(grep -E '^tps' "$DIR/pgbench.out" | head -1)"
echo "log worker: $rows rows, $(echo "scale=2; ($ut2 + $st2 - $ut - $st) * 1000000 / $tick / $rows" | bc) CPU µs per row (user+system over the whole run)"
echo
echo "top 15 by self time (% of the worker's samples):"
"${SUDO[@]}" perf report -i "$DIR/perf.data" --no-children --sort symbol --stdio -q 2>/dev/null |
    grep -E "^ +[0-9.]+%" | sed "s/ *-  *- *$//; s/ *$//" | head -15
echo
echo "top 25 by inclusive time (self + callees):"
"${SUDO[@]}" perf report -i "$DIR/perf.data" --children --sort symbol --stdio -q -g none 2>/dev/null |
    grep -E "^ +[0-9.]+%" | sed "s/ *-  *- *$//; s/ *$//" | head -40
"${SUDO[@]}" perf script -i "$DIR/perf.data" 2>/dev/null | awk '
    /^\S/ { if (n) { s = stack[n - 1]; for (i = n - 2; i >= 0; i--) s = s ";" stack[i]; folded[s]++ } n = 0; next }
    /^\s+[0-9a-f]+ / { sym = $2; sub(/\+0x[0-9a-f]+$/, "", sym); stack[n++] = sym; next }
    END { if (n) { s = stack[n - 1]; for (i = n - 2; i >= 0; i--) s = s ";" stack[i]; folded[s]++ }
          for (s in folded) print s, folded[s] }' >"$OUT/worker_profile.folded"
echo
echo "folded stacks (for flamegraph.pl): $OUT/worker_profile.folded"
