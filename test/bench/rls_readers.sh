#!/usr/bin/env bash
# RLS readers at 10 million log rows: an application role in a context reads
# its merchant's newest 50 rows, and one hot key's newest 50 rows, through
# the per-partition indexes; so does another merchant reading a rarely used
# key's and an unknown key's. Prints EXPLAIN (ANALYZE, BUFFERS) of each into
# test/bench/results/rls_readers.txt (about 4 minutes on 2 cores).
#
#   bash test/bench/rls_readers.sh            10,000,000 rows
#   ROWS=1000000 bash test/bench/rls_readers.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROWS="${ROWS:-10000000}"
OUT="$ROOT/test/bench/results/rls_readers.txt"
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
make -C "$ROOT" -s >/dev/null && "${SUDO[@]}" make -C "$ROOT" -s install >/dev/null
source "$ROOT/scripts/cluster.sh"
q() { cluster_psql -qAtX -v ON_ERROR_STOP=1 "$@"; }
DIR="$(mktemp -d /tmp/flint_rls.XXXXXX)"
trap 'cluster_stop; rm -rf "$DIR"' EXIT
cluster_start "$DIR" "shared_buffers = 1GB" "max_wal_size = 8GB" "max_parallel_workers_per_gather = 0"

M='aaaaaaaa-0000-0000-0000-000000000001'
q -c "CREATE EXTENSION flint_keys" \
  -c "INSERT INTO flint.merchants (id, name) SELECT ('aaaaaaaa-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'm' || i FROM generate_series(1, 200) i" \
  -c "SELECT flint._maintain_request_log((now() AT TIME ZONE 'UTC')::date - 3)"
KEY=$(q -c "SELECT key_id FROM flint_create_key('$M', 'hot', ARRAY['logs:read'])")
SECRET=$(q -c "SELECT secret FROM flint_rotate_key('$KEY')")
# A second merchant's context: its key 00000000-...-000000000001 is used 1,000
# times among the merchant's 47,500 rows (a rarely used key).
M2='aaaaaaaa-0000-0000-0000-000000000002'
SECRET2=$(q -c "SELECT secret FROM flint_create_key('$M2', 'reader', ARRAY['logs:read'])")
COLD='00000000-0000-4000-8000-000000000001'
# 10,000 keys over 200 merchants; the hot key has 5% of all rows, its merchant 1/200 of the rest.
echo "loading $ROWS rows..."
start=$(date +%s)
q -c "INSERT INTO flint.request_log (at, key_id, display_prefix, merchant_id, scope, outcome, sqlstate, backend_pid, source)
      SELECT now() - (i::float8 / $ROWS) * interval '3 days',
             CASE WHEN i % 20 = 0 THEN '$KEY'::uuid ELSE ('00000000-0000-4000-8000-' || lpad((i % 10000)::text, 12, '0'))::uuid END,
             'fk_live_xxxxxxxx',
             CASE WHEN i % 20 = 0 THEN '$M'::uuid ELSE ('aaaaaaaa-0000-0000-0000-' || lpad((1 + (i % 10000) % 200)::text, 12, '0'))::uuid END,
             'payments:read', CASE WHEN i % 50 = 0 THEN 'missing_scope' ELSE 'ok' END, '00000', 1, 'verify'
        FROM generate_series(1, $ROWS) i" -c "VACUUM ANALYZE flint.request_log"
echo "loaded in $(( $(date +%s) - start )) s"
q -c "CREATE ROLE app" -c "GRANT EXECUTE ON FUNCTION flint_authenticate(text) TO app" \
  -c "GRANT USAGE ON SCHEMA flint TO app" -c "GRANT SELECT ON flint.request_log TO app"
{
    echo "RLS readers, $(date -u +%Y-%m-%dT%H:%MZ), $ROWS rows in flint.request_log ($(q -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'flint.request_log'::regclass") partitions)"
    echo "the hot key: $(q -c "SELECT count(*) FROM flint.request_log WHERE key_id = '$KEY'") rows; its merchant: $(q -c "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$M'") rows"
    echo "a rarely used key of merchant 2: $(q -c "SELECT count(*) FROM flint.request_log WHERE key_id = '$COLD'") rows; merchant 2: $(q -c "SELECT count(*) FROM flint.request_log WHERE merchant_id = '$M2'") rows"
    # secret|query: the merchant's newest rows, the hot key's, (merchant 2) a
    # rarely used key's (the per-partition statistics tell the planner a key
    # has one merchant, so it does not sort all of that key's rows) and an
    # unknown key's.
    for run in "$SECRET|SELECT * FROM flint.request_log ORDER BY at DESC LIMIT 50" \
               "$SECRET|SELECT * FROM flint.request_log WHERE key_id = '$KEY' ORDER BY at DESC LIMIT 50" \
               "$SECRET2|SELECT * FROM flint.request_log WHERE key_id = '$COLD' ORDER BY at DESC LIMIT 50" \
               "$SECRET2|SELECT * FROM flint.request_log WHERE key_id = '00000000-0000-4000-8000-999999999999' ORDER BY at DESC LIMIT 50"; do
        secret="${run%%|*}" query="${run#*|}"
        echo
        echo "-- as the application role in a context (RLS: merchant_id = the context's merchant):"
        echo "-- $query"
        # twice: the first run reads the pages into the cache; the second is the one shown
        q -c "BEGIN" -c "SET LOCAL ROLE app" -c "SELECT count(*) FROM flint_authenticate('$secret')" -c "$query" -c "COMMIT" >/dev/null
        q -c "BEGIN" -c "SET LOCAL ROLE app" -c "SELECT count(*) FROM flint_authenticate('$secret')" \
          -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $query" -c "COMMIT" | grep -v '^1$'
    done
} | tee "$OUT"
