#!/usr/bin/env bash
# What one request-log row costs the log worker, the direct insert
# (flint.log_direct_insert = on, 1.3) against binary COPY (off, as before),
# measured in the same cluster, alternating: with the worker stopped
# (SIGSTOP), ROWS verifications of N distinct keys are queued; after a
# CHECKPOINT the worker goes on and drains them. Per row: the worker's CPU
# (utime + stime from /proc), the drain rate, heap and index bytes, WAL
# bytes and full-page images (pg_stat_wal; right after a checkpoint, as
# under a checkpoint storm). Medians of LOG_ROW_ROUNDS rounds.
#
#   bash test/bench/log_row.sh          alone (its own cluster)
#   sourced by test/bench/run.sh        (section 12, in its cluster)
set -euo pipefail
if [ -z "${ROOT:-}" ]; then
    ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    SUDO=()
    [ "$(id -u)" = 0 ] || SUDO=(sudo)
    make -C "$ROOT" -s >/dev/null && "${SUDO[@]}" make -C "$ROOT" -s install >/dev/null
    source "$ROOT/test/bench/common.sh"
    DIR="$(mktemp -d /tmp/flint_log_row.XXXXXX)"
    trap 'cluster_stop; rm -rf "$DIR"' EXIT
    bench_cluster_start "$DIR" >/dev/null
    q -c "SELECT bench.grow_keys('$M', 100000)" >/dev/null
    say() { echo "$*"; }
fi
LR_ROWS="${LOG_ROW_ROWS:-200000}"
LR_ROUNDS="${LOG_ROW_ROUNDS:-3}"
TICK=$(getconf CLK_TCK)

# log_row_drain NKEYS: one drain; prints "cpu_us_per_row rows_per_s heap_B idx_B wal_B fpi_per_1000".
log_row_drain() {
    q -c "SELECT flint_flush_log()" >/dev/null
    local pid
    pid=$(q -c "SELECT worker_pid FROM flint_log_status()")
    stop_idle_worker "$pid"
    q -c "SELECT count(flint_verify_key(k.tok, 'payments:read', '$M')) FROM generate_series(1, $LR_ROWS) g
            JOIN bench.keys k ON k.n = 1 + (g * 7919) % $1" >/dev/null
    local target
    target=$(q -c "SELECT queued FROM flint_log_status()")
    q -c "CHECKPOINT" >/dev/null
    local sizes="SELECT sum(pg_relation_size(c.oid)) FILTER (WHERE c.relkind = 'r'),
                        sum(pg_relation_size(c.oid)) FILTER (WHERE c.relkind = 'i'),
                        pg_current_wal_insert_lsn() - '0/0', (SELECT wal_fpi FROM pg_stat_wal)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'flint' AND c.relname ~ '^request_log_'"
    local before after u s u2 s2 t0 t1
    before=$(q -F' ' -c "$sizes")
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    t0=$(date +%s.%N)
    kill -CONT "$pid"
    q -c "DO \$\$ BEGIN WHILE (SELECT inserted FROM flint_log_status()) < $target LOOP PERFORM pg_sleep(0.002); END LOOP; END \$\$" >/dev/null
    t1=$(date +%s.%N)
    read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    q -c "SELECT pg_stat_force_next_flush()" >/dev/null
    after=$(q -F' ' -c "$sizes")
    read -r h0 i0 w0 f0 <<<"$before"
    read -r h1 i1 w1 f1 <<<"$after"
    echo "$(echo "scale=2; ($u2 + $s2 - $u - $s) * 1000000 / $TICK / $LR_ROWS" | bc) $(echo "$LR_ROWS / ($t1 - $t0)" | bc)" \
        "$(((h1 - h0) / LR_ROWS)) $(((i1 - i0) / LR_ROWS)) $(echo "($w1 - $w0) / $LR_ROWS" | bc) $(echo "scale=2; ($f1 - $f0) * 1000 / $LR_ROWS" | bc)"
}

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

say "$LR_ROWS rows queued with the worker stopped, drained after a CHECKPOINT; medians of $LR_ROUNDS rounds, direct and COPY alternating"
# Plain keys only: run.sh's section 10 gave one an allowlist and a quota.
q -c "SELECT count(flint_clear_key_limits(k.id)) FROM flint.api_keys AS k
       WHERE k.rate_limit IS NOT NULL OR k.remaining IS NOT NULL OR k.allowed_ips IS NOT NULL" >/dev/null
declare -A res
for r in $(seq 1 "$LR_ROUNDS"); do
    for mode in on off; do
        q -c "ALTER SYSTEM SET flint.log_direct_insert = $mode" -c "SELECT pg_reload_conf()" >/dev/null
        sleep 0.5
        for n in 10 10000 100000; do
            res[$mode.$n]+="$(log_row_drain "$n")"$'\n'
        done
    done
done
q -c "ALTER SYSTEM RESET flint.log_direct_insert" -c "SELECT pg_reload_conf()" >/dev/null
col() { printf '%s' "${res[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
for n in 10 10000 100000; do
    for mode in on off; do
        label=$([ $mode = on ] && echo "direct" || echo "COPY  ")
        say "$n keys, $label: worker $(col $mode.$n 1) µs/row, drain $(col $mode.$n 2) rows/s; heap $(col $mode.$n 3) B/row, indexes $(col $mode.$n 4) B/row, WAL $(col $mode.$n 5) B/row, $(col $mode.$n 6) full-page images per 1,000 rows"
    done
    say "$n keys: direct/COPY worker CPU per row = $(echo "scale=2; $(col on.$n 1) / $(col off.$n 1)" | bc)  (target: <= 5 µs/row, >= 100,000 rows/s)"
done
