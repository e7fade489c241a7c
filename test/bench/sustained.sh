#!/usr/bin/env bash
# Sustained load, the product contract's measurement (test/t/019_sustained_load.pl
# asserts it): two pgbench clients at full speed (pgbench -M prepared -c 2
# -j 2) verifying random keys among 10,000 for BENCH_SECS (default 120), on a
# throwaway cluster with default settings, then again with checkpoint_timeout
# = 30s. Prints one line per 10-second interval (TPS, its ratio to the run's
# mean, the log worker's longest open transaction, the queue's depth, and
# whether a checkpoint was running) and per run a summary: mean TPS, slowest
# interval / mean (contract >= 0.5), refused verifications (contract 0),
# request-log rows vs transactions (contract equal).
#
#   bash test/bench/sustained.sh                 (about 5 minutes)
#   BENCH_SECS=60 bash test/bench/sustained.sh   shorter runs
#   BENCH_NO_INSTALL=1 bash test/bench/sustained.sh   measure the installed build (no make install)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${BENCH_OUT:-$ROOT/test/bench/results}"
mkdir -p "$OUT"
SECS="${BENCH_SECS:-120}"
INTERVAL=10
NKEYS=10000
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
if [ -z "${BENCH_NO_INSTALL:-}" ]; then
    make -C "$ROOT" -s >/dev/null && "${SUDO[@]}" make -C "$ROOT" -s install >/dev/null
fi

source "$ROOT/scripts/cluster.sh"
M='aaaaaaaa-0000-0000-0000-000000000001'
q() { cluster_psql -qAtX -v ON_ERROR_STOP=1 "$@"; }
DIR="$(mktemp -d /tmp/flint_sustained_bench.XXXXXX)"
trap 'cluster_stop; rm -rf "$DIR"' EXIT
# Default settings: only what cluster.sh sets (the socket, the port, the
# library, flint.database) and log lines stamped with epoch seconds, so
# checkpoints can be placed in the intervals.
cluster_start "$DIR" "log_line_prefix = '%n [%p] '" "log_checkpoints = on"
q -c "CREATE EXTENSION flint_keys"
# The log worker retries every 5 s until the database exists: wait for it.
until [ "$(q -c "SELECT worker_pid IS NOT NULL FROM flint_log_status()")" = t ]; do sleep 0.5; done
q -c "INSERT INTO flint.merchants (id, name) VALUES ('$M', 'bench')"
# The keys through the public API, their secrets where the script reads them
# by primary key; scope and merchant are bind parameters, as an application sends them.
q -c "CREATE TABLE bench_keys (i int PRIMARY KEY, secret text NOT NULL);
      INSERT INTO bench_keys SELECT g, k.secret FROM generate_series(1, $NKEYS) g,
             LATERAL flint_create_key('$M', 'sustained ' || g, '{payments:read}') k;
      ANALYZE bench_keys;"
printf '\\set i random(1, %d)\nSELECT flint_verify_key(secret, :scope, :merchant) FROM bench_keys WHERE i = :i;\n' \
    "$NKEYS" >"$DIR/verify.sql"
[ "$(id -u)" = 0 ] && chown postgres "$DIR/verify.sql"

REPORT="$OUT/sustained.txt"
: >"$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
say "flint_keys sustained load, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $(pg_config --version | awk '{print $2}'), flint_keys $(q -c "SELECT extversion FROM pg_extension WHERE extname = 'flint_keys'")"
say "pgbench -M prepared -c 2 -j 2 -T $SECS -P $INTERVAL, flint_verify_key of a random key among $NKEYS"

COUNTERS="SELECT m.refused_total, m.inserted_total, s.batches,
                 (SELECT count(*) FROM flint.request_log WHERE source = 'verify' AND outcome = 'ok'),
                 (SELECT count(*) FROM flint.request_log WHERE source = 'verify' AND outcome <> 'ok'),
                 b.checkpoints_timed + b.checkpoints_req
            FROM flint.metrics m, (SELECT * FROM flint_log_status() LIMIT 1) s, pg_stat_bgwriter b"
# Every 0.25 s until the run is over, one NOTICE: epoch|the log worker's open
# transaction (s)|its wait event or state|queue depth|capacity. Committing
# between samples, it holds no snapshot back.
SAMPLER="DO \$\$
DECLARE stop timestamptz := clock_timestamp() + interval '$((SECS + 2)) s'; r text;
BEGIN
    WHILE clock_timestamp() < stop LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT extract(epoch FROM clock_timestamp()) || '|'
               || coalesce(extract(epoch FROM clock_timestamp() - a.xact_start), 0) || '|'
               || coalesce(a.wait_event_type || ':' || a.wait_event, a.state, '-') || '|' || s.pending || '|' || s.capacity
          INTO r
          FROM (SELECT * FROM flint_log_status() LIMIT 1) s
          LEFT JOIN pg_stat_activity a ON a.backend_type = 'flint_keys log worker';
        RAISE NOTICE 'sample|%', r;
        COMMIT;
        PERFORM pg_sleep(0.25);
    END LOOP;
END \$\$"

# run LABEL: one pgbench run and its report.
run() {
    local label="$1" n="$2"
    q -c "SELECT flint_flush_log()" >/dev/null
    local before after log_offset
    before="$(q -F' ' -c "$COUNTERS")"
    log_offset=$(stat -c %s "$DIR/server.log")
    q -c "$SAMPLER" 2>"$DIR/samples.$n" &
    local sampler=$!
    set +e
    "${CLUSTER_USER[@]}" "$PGBIN/pgbench" -h "$DIR" -p "$CLUSTER_PORT" -U postgres -n -M prepared -c 2 -j 2 \
        -T "$SECS" -P "$INTERVAL" --progress-timestamp -D scope=payments:read -D merchant="$M" -f "$DIR/verify.sql" flint \
        >"$DIR/pgbench.$n.out" 2>"$DIR/pgbench.$n.err"
    local status=$?
    set -e
    wait "$sampler" || true
    q -c "SELECT flint_flush_log()" >/dev/null
    after="$(q -F' ' -c "$COUNTERS")"
    tail -c +"$((log_offset + 1))" "$DIR/server.log" >"$DIR/server.$n.log"
    say ""
    say "== $label"
    python3 - "$label" "$SECS" "$INTERVAL" "$status" "$before" "$after" "$DIR/pgbench.$n.out" "$DIR/pgbench.$n.err" \
        "$DIR/samples.$n" "$DIR/server.$n.log" <<'PY' | tee -a "$REPORT"
import re, sys
label, secs, interval, status, before, after, out_f, err_f, samples_f, log_f = sys.argv[1:]
secs, interval, status = int(secs), int(interval), int(status)
d = [int(a) - int(b) for a, b in zip(after.split(), before.split())]
refused, inserted, batches, rows_ok, rows_other, ckpts = d
out, err = open(out_f).read(), open(err_f).read()
m = re.search(r'number of transactions actually processed: (\d+)', out); processed = int(m.group(1)) if m else 0
m = re.search(r'number of failed transactions: (\d+)', out); failed = int(m.group(1)) if m else -1
m = re.search(r'^tps = ([\d.]+)', out, re.M); tps = float(m.group(1)) if m else 0.0
aborts = re.findall(r'client \d+ script \d+ aborted.*', err)
# Progress lines carry epoch stamps; pgbench prints none for the interval
# that ends the run: that one is what the total leaves over the others.
prog = [(float(a), float(t)) for a, t in re.findall(r'^progress: ([\d.]+) s, ([\d.]+) tps', err, re.M)]
start = prog[0][0] - interval if prog else 0.0
intervals, prev, reported = [], start, 0.0
for at, t in prog:
    reported += t * (at - prev)
    if at - prev >= 0.95 * interval and at <= start + secs + 0.5:
        intervals.append((prev, at, t, ''))
    prev = at
if prog and start + secs - prev >= 0.95 * interval and processed:
    intervals.append((prev, start + secs, (processed - reported) / (start + secs - prev), '*'))
samples = []
for line in open(samples_f):
    m = re.search(r'sample\|([\d.]+)\|([\d.]+)\|([^|]*)\|(\d+)\|(\d+)', line)
    if m:
        samples.append((float(m.group(1)), float(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))))
capacity = samples[-1][4] if samples else 0
# Checkpoints from the server log: [start, end) in epoch seconds.
ckpt, opened = [], None
for line in open(log_f, errors='replace'):
    m = re.match(r'([\d.]+) \[\d+\] LOG:  checkpoint (starting|complete)', line)
    if m:
        if m.group(2) == 'starting': opened = float(m.group(1))
        else: ckpt.append((opened if opened is not None else start, float(m.group(1)))); opened = None
if opened is not None: ckpt.append((opened, float('inf')))
for a, b, t, mark in intervals:
    ss = [s for s in samples if a <= s[0] < b]
    xact = max((s[1] for s in ss), default=0.0)
    depth = max((s[3] for s in ss), default=0)
    inck = any(c0 < b and c1 > a for c0, c1 in ckpt)
    print(f'  {a - start:5.0f}-{b - start:3.0f} s  {t:8.0f} tps{mark:1}  {t / tps if tps else 0:4.2f}x mean   '
          f'worker: longest xact {xact:5.3f} s, queue max {depth:5d}/{capacity}'
          + ('   checkpoint' if inck else ''))
slowest = min(intervals, key=lambda i: i[2]) if intervals else (0, 0, 0, '')
ratio = slowest[2] / tps if tps else 0
ok = lambda c: 'met' if c else 'NOT MET'
if any(i[3] for i in intervals):
    print('  (*: the last interval, which pgbench reports no progress line for: the total less the others)')
print(f'  mean {tps:.0f} tps; slowest interval {slowest[2]:.0f} tps = {ratio:.2f}x the mean (contract >= 0.5: {ok(ratio >= 0.5)})')
print(f'  refused {refused} (contract 0: {ok(refused == 0)}); pgbench exit {status}, {failed} failed transactions, '
      f'{len(aborts)} clients aborted')
print(f'  request-log rows {rows_ok} ok + {rows_other} other for {processed} transactions '
      f'(contract equal: {ok(rows_ok == processed and rows_other == 0)}); {batches} worker batches, '
      f'{inserted / batches if batches else 0:.0f} rows each')
print(f'  log worker: longest open transaction {max((s[1] for s in samples), default=0):.3f} s, '
      f'queue max {max((s[3] for s in samples), default=0)}/{capacity} over {len(samples)} samples; '
      f'{ckpts} checkpoints')
# The server's log meanwhile: checkpoints, the worker's warnings, errors (at most 12 lines).
logged = [l for l in open(log_f, errors='replace') if re.search(r'checkpoint complete|WARNING|ERROR|FATAL|PANIC|flint', l)]
for line in logged[:12]:
    print('  log: ' + re.sub(r'^([\d.]+) \[\d+\] ', lambda m: f'{float(m.group(1)) - start:+.1f} s ', line.rstrip())[:220])
if len(logged) > 12:
    print(f'  log: ... {len(logged) - 12} more such lines')
for a in aborts[:2]:
    print('  pgbench: ' + a[:200])
PY
}

run "default settings" 1
q -c "ALTER SYSTEM SET checkpoint_timeout = '30s'" -c "SELECT pg_reload_conf()" >/dev/null
until [ "$(q -c "SHOW checkpoint_timeout")" = 30s ]; do sleep 0.2; done
run "checkpoint_timeout = 30s" 2
