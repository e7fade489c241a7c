#!/usr/bin/env bash
# How close can any verification get to SELECT 1, and to the bare sha256()
# round trip, end to end on this machine? Builds flint_keys with
# test/bench/ceiling.patch (an environment switch that is never shipped),
# then measures, interleaved with both in the same run:
#   full     flint_verify_key as shipped (the patch is inert without the switch)
#   discard  the same, but the log worker drops rows instead of inserting them
#   nolog    no request-log row is queued at all
#   noop     the C function returns at once (the cost of a call with 3 arguments)
# and, for full and discard, a random key among 10 and among 100,000 (the
# active-keys comparison of run.sh section 7: what the worker's inserts cost
# at many keys). Reinstalls the unpatched extension at the end. See BENCHMARKS.md.
#
#   bash test/bench/ceiling.sh        (about 6 minutes on 2 cores; writes test/bench/results/ceiling.txt)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECS="${SECS:-5}"
ROUNDS="${ROUNDS:-3}"
ACTIVE_SECS=${ACTIVE_SECS:-20}
ACTIVE_STEADY=${ACTIVE_STEADY:-8}
export BC_LINE_LENGTH=0
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)

PATCHED="$(mktemp -d /tmp/flint_ceiling_src.XXXXXX)"
DIR="$(mktemp -d /tmp/flint_ceiling.XXXXXX)"
source "$ROOT/test/bench/common.sh"
restore() {
    cluster_stop
    "${SUDO[@]}" make -C "$ROOT" -s install >/dev/null # the extension as shipped
    rm -rf "$PATCHED" "$DIR"
}
trap restore EXIT
git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 tar cf -) | tar xf - -C "$PATCHED"
(cd "$PATCHED" && git apply "$ROOT/test/bench/ceiling.patch") # git apply works outside a repository too
make -C "$PATCHED" -s >/dev/null && "${SUDO[@]}" make -C "$PATCHED" -s install >/dev/null

bench_cluster_start "$DIR"
OUT="${BENCH_OUT:-$ROOT/test/bench/results}"
mkdir -p "$OUT"
exec > >(tee "$OUT/ceiling.txt")
restart_with() {
    "${CLUSTER_USER[@]}" env FLINT_CEILING="$1" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w restart >/dev/null
}
CONFIGS="full discard nolog noop"
declare -A s1 sh vf cpu
for c in $CONFIGS; do s1[$c]=0; sh[$c]=0; vf[$c]=0; cpu[$c]="0 0 0"; done
echo "ceiling: pgbench -M prepared -c 2 -j 2, ${SECS}s runs, $ROUNDS rounds, $(nproc) cores"
for r in $(seq 1 "$ROUNDS"); do
    line="round $r:"
    for c in $CONFIGS; do
        restart_with "$([ "$c" = full ] && echo "" || echo "$c")"
        read -r a _ < <(pgb select1)
        read -r h _ < <(pgb sha256)
        read -r t b p w _ < <(pgb verify)
        s1[$c]=$((s1[$c] + a)); sh[$c]=$((sh[$c] + h)); vf[$c]=$((vf[$c] + t))
        read -r B P W <<<"${cpu[$c]}"
        cpu[$c]="$(echo "$B + $b" | bc) $(echo "$P + $p" | bc) $(echo "$W + $w" | bc)"
        line="$line  $c $t/$h/$a"
    done
    echo "$line  (verify/sha256/SELECT 1 tps)"
done
for c in $CONFIGS; do
    read -r B P W <<<"${cpu[$c]}"
    echo "$(echo "scale=2; print \"$c: verify/SELECT 1 = \", ${vf[$c]} / ${s1[$c]}, \", verify/sha256 = \", ${vf[$c]} / ${sh[$c]}, \"   CPU µs per verification: backend \", $B/$ROUNDS, \", pgbench \", $P/$ROUNDS, \", log worker \", $W/$ROUNDS" | bc)"
done

# Active keys: a random key among 10 and among 100,000, steady state, with
# the worker inserting (full) and dropping (discard) the rows.
q -c "SELECT bench.grow_keys('$M', 100000)" >/dev/null
q -c "VACUUM ANALYZE flint.api_keys, bench.keys" >/dev/null
active_key_scripts
for c in full discard; do
    restart_with "$([ "$c" = full ] && echo "" || echo "$c")"
    ten=$(pgb_steady verify_random 10)
    many=$(pgb_steady verify_random 100000)
    echo "$c: random key among 10: $ten tps, among 100,000: $many tps: ratio $(echo "scale=2; $many / $ten" | bc)"
done
