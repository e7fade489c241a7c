#!/usr/bin/env bash
# Read replicas: verification TPS on a hot standby against the primary (the
# same pgbench script, interleaved rounds, one run), and the forwarder's
# throughput over a local connection (its process paused while 200,000 rows
# are spooled, then timed until the spool is empty). See BENCHMARKS.md.
#
#   bash test/bench/standby.sh        (about 2 minutes on 2 cores)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${BENCH_OUT:-$ROOT/test/bench/results}"
mkdir -p "$OUT"
SECS="${BENCH_SECS:-10}"
ROUNDS=3
ROWS=200000
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
make -C "$ROOT" -s >/dev/null && "${SUDO[@]}" make -C "$ROOT" -s install >/dev/null

source "$ROOT/test/bench/common.sh"
DIR="$(mktemp -d /tmp/flint_standby_bench.XXXXXX)"
STANDBY="$DIR/standby"
SPORT=$((CLUSTER_PORT + 1))
standby_stop() { "${CLUSTER_USER[@]}" "$PGBIN/pg_ctl" -D "$STANDBY" -m fast -w stop >/dev/null 2>&1 || true; }
trap 'standby_stop; cluster_stop; rm -rf "$DIR"' EXIT
bench_cluster_start "$DIR"
sq() { "${CLUSTER_USER[@]}" "$PGBIN/psql" -h "$DIR" -p "$SPORT" -U postgres -d flint -qAtX -v ON_ERROR_STOP=1 "$@"; }

"${CLUSTER_USER[@]}" "$PGBIN/pg_basebackup" -h "$DIR" -p "$CLUSTER_PORT" -U postgres -D "$STANDBY" -R -X stream -c fast
printf "port = %s\ncluster_name = 'bench_standby'\n" "$SPORT" | "${CLUSTER_USER[@]}" tee -a "$STANDBY/postgresql.auto.conf" >/dev/null
"${CLUSTER_USER[@]}" "$PGBIN/pg_ctl" -D "$STANDBY" -l "$DIR/standby.log" -w start >/dev/null
until [ "$(sq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flint_keys log forwarder'" 2>/dev/null)" = 1 ]; do sleep 0.5; done

REPORT="$OUT/standby.txt"
: >"$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
say "flint_keys read replicas, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $(pg_config --version | awk '{print $2}')"
say ""
say "== verification TPS: pgbench -M prepared -c 2 -j 2 -T $SECS of flint_verify_key, primary and standby interleaved, $ROUNDS rounds"
tps_on() { # PORT: tps of verify.sql there
    "${CLUSTER_USER[@]}" "$PGBIN/pgbench" -h "$DIR" -p "$1" -U postgres -n -M prepared -c 2 -j 2 -T "$SECS" \
        -D tok="$TOK" -D scope=payments:read -D merchant="$M" -f "$DIR/verify.sql" flint 2>&1 |
        awk '/^tps/ {printf "%d\n", $3}'
}
p_sum=0; s_sum=0
for r in $(seq 1 "$ROUNDS"); do
    p=$(tps_on "$CLUSTER_PORT"); s=$(tps_on "$SPORT")
    p_sum=$((p_sum + p)); s_sum=$((s_sum + s))
    say "round $r: primary $p tps, standby $s tps"
done
sq -c "SELECT flint_flush_log()" >/dev/null
say "standby/primary = $(echo "scale=2; $s_sum / $p_sum" | bc)  (the standby spools and forwards its rows; the primary also inserts them)"
say "rows the standby forwarded: $(sq -c "SELECT forwarded FROM flint_log_status() LIMIT 1"), on the primary with server = 'bench_standby': $(q -c "SELECT count(*) FROM flint.request_log WHERE server = 'bench_standby'")"

say ""
say "== forwarding throughput: $ROWS rows spooled while the forwarder is paused, then timed until the spool is empty"
fpid=$(sq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'flint_keys log forwarder'")
kill -STOP "$fpid"
before=$(q -c "SELECT count(*) FROM flint.request_log")
sq -c "SELECT count(flint_verify_key(t.tok || left(g::text, 0), 'payments:read', '$M'))
         FROM generate_series(1, $((ROWS / 10000))) g, (SELECT tok FROM bench.tokens LIMIT 10000) t" >/dev/null
until [ "$(sq -c "SELECT spooled >= $ROWS AND pending = 0 FROM flint_log_status() LIMIT 1")" = t ]; do sleep 0.2; done
files=$(ls "$STANDBY/flint_keys_spool" | wc -l)
t0=$(date +%s.%N)
kill -CONT "$fpid"
until [ "$(sq -c "SELECT spooled = 0 FROM flint_log_status() LIMIT 1")" = t ]; do sleep 0.02; done
t1=$(date +%s.%N)
after=$(q -c "SELECT count(*) FROM flint.request_log")
say "$ROWS rows in $files batch files forwarded in $(echo "scale=2; $t1 - $t0" | bc) s: $(echo "$ROWS / ($t1 - $t0)" | bc) rows/s; rows added on the primary: $((after - before))"
