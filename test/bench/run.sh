#!/usr/bin/env bash
# Every flint_keys benchmark, each printing ratios measured in the same run
# (never absolute thresholds: the machines are noisy). See BENCHMARKS.md.
#
#   bash test/bench/run.sh            everything (about 5 minutes on 2 cores)
#   BENCH_QUICK=1 bash test/bench/run.sh   shorter runs, no 1M-key step
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${BENCH_OUT:-$ROOT/test/bench/results}"
mkdir -p "$OUT"
QUICK="${BENCH_QUICK:-}"
SECS=$([ -n "$QUICK" ] && echo 3 || echo 6)
ROUNDS=$([ -n "$QUICK" ] && echo 2 || echo 3)
REPS=$([ -n "$QUICK" ] && echo 3 || echo 7)
export BC_LINE_LENGTH=0
SIZES=$([ -n "$QUICK" ] && echo "1000 100000" || echo "1000 100000 1000000")
ACTIVE_SIZES="10 1000 10000 100000"
ACTIVE_SECS=$([ -n "$QUICK" ] && echo 10 || echo 20)
ACTIVE_STEADY=$([ -n "$QUICK" ] && echo 4 || echo 8)
ACTIVE_ROUNDS=1

SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
make -C "$ROOT" -s >/dev/null && "${SUDO[@]}" make -C "$ROOT" -s install >/dev/null
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build "$ROOT/build" -j2 >/dev/null

source "$ROOT/test/bench/common.sh"
DIR="$(mktemp -d /tmp/flint_bench.XXXXXX)"
trap 'cluster_stop; rm -rf "$DIR"' EXIT
bench_cluster_start "$DIR"

REPORT="$OUT/latest.txt"
: >"$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
say "flint_keys benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m), PostgreSQL $(pg_config --version | awk '{print $2}')"

say ""
say "== 1. core micro-benchmarks (Google Benchmark)"
"$ROOT/build/flint_core_bench" --benchmark_min_time=0.2 2>/dev/null | grep -E '^BM_' | tee -a "$REPORT"

say ""
say "== 2. in-process, 20,000 tokens of 10,000 keys, logging on (median of $REPS, interleaved)"
VERIFY="SELECT count(flint_verify_key(tok, 'payments:read', '$M')) FROM bench.tokens"
SHA="SELECT count(sha256(convert_to(tok, 'UTF8'))) FROM bench.tokens"
q -c "$VERIFY" >/dev/null  # warm the key cache and the buffers
read -r v_ms s_ms ratio < <(q -F' ' -c "SELECT round(a_ms::numeric, 1), round(b_ms::numeric, 1), round(ratio::numeric, 2) FROM bench.compare(\$\$$VERIFY\$\$, \$\$$SHA\$\$, $REPS)")
say "flint_verify_key: $v_ms ms   sha256(): $s_ms ms   ratio verify/sha256 = $ratio  (target <= 2.0)"

say ""
say "== 3. versus the hand-written PL/pgSQL + pgcrypto reference (test/bench/reference_plpgsql.sql)"
REFQ="SELECT count(ref.verify_key(tok, 'payments:read', '$M')) FROM (SELECT tok FROM bench.tokens LIMIT 2000) t"
FLQ="SELECT count(flint_verify_key(tok, 'payments:read', '$M')) FROM (SELECT tok FROM bench.tokens LIMIT 2000) t"
read -r r_ms f_ms ratio < <(q -F' ' -c "SELECT round(a_ms::numeric, 1), round(b_ms::numeric, 1), round(ratio::numeric, 1) FROM bench.compare(\$\$$REFQ\$\$, \$\$$FLQ\$\$, $REPS)")
say "in-process, 2,000 calls in one statement: reference $r_ms ms, flint $f_ms ms: flint is ${ratio}x faster per call (target >= 20)"

say ""
say "== 4. end to end: pgbench -M prepared -c 2 -j 2, ${SECS}s runs, $ROUNDS interleaved rounds"
declare -A tps cpu
for name in select1 params sha256 verify reference; do tps[$name]=0; cpu[$name]="0 0 0 0"; done
for r in $(seq 1 "$ROUNDS"); do
    line="round $r:"
    for name in select1 params sha256 verify reference; do
        read -r t b p w o < <(pgb "$name")
        line="$line $name $t"
        tps[$name]=$((tps[$name] + t))
        read -r B P W O <<<"${cpu[$name]}"
        cpu[$name]="$(echo "$B + $b" | bc) $(echo "$P + $p" | bc) $(echo "$W + $w" | bc) $(echo "$O + $o" | bc)"
    done
    say "$line tps"
done
say "labels: select1 = SELECT 1; params = the same 3 parameters echoed; sha256 = sha256(convert_to(:tok, 'UTF8')); verify = flint_verify_key; reference = ref.verify_key"
say "CPU µs per transaction, mean of the rounds (backends + pgbench + log worker + other processes = machine CPU):"
for name in select1 params sha256 verify reference; do
    read -r B P W O <<<"${cpu[$name]}"
    say "$(echo "scale=2; b=$B/$ROUNDS; p=$P/$ROUNDS; w=$W/$ROUNDS; o=$O/$ROUNDS; print \"  $name: \", b, \" + \", p, \" + \", w, \" + \", o, \" = \", b+p+w+o" | bc)"
done
vf=${tps[verify]}; s1=${tps[select1]}
say "verify/SELECT 1 = $(echo "scale=2; $vf / $s1" | bc)  (target >= 0.8);  verify/parameters echoed = $(echo "scale=2; $vf / ${tps[params]}" | bc);  verify/sha256(:tok) = $(echo "scale=2; $vf / ${tps[sha256]}" | bc)"
say "flint/reference = $(echo "scale=1; $vf / ${tps[reference]}" | bc)x per call, each call its own transaction"

say ""
say "== 5. key count: per-call cost of flint_verify_key (20,000 tokens of 1,000 keys picked at random among all, logging on)"
: >"$OUT/keycount.dat"
for n in $SIZES; do
    q -c "SELECT bench.grow_keys('$M', $n); SELECT bench.make_tokens(1000)" >/dev/null
    q -c "VACUUM ANALYZE flint.api_keys" >/dev/null
    warm=$(q -c "SELECT flint_flush_log(); $VERIFY" -c "SELECT round((bench.time_ms(\$\$$VERIFY\$\$, $REPS) * 1000 / 20000)::numeric, 2)" | tail -1)
    cold=$(q -c "SET flint.key_cache = off" -c "SELECT round((bench.time_ms(\$\$$VERIFY\$\$, $REPS) * 1000 / 20000)::numeric, 2)" | tail -1)
    say "$n keys: $warm us/call with the key cache, $cold us/call without (index scan every call)"
    echo "$n $warm $cold" >>"$OUT/keycount.dat"
done
awk 'NR==1 {w=$2; c=$3} END {printf "largest/smallest: %.2f with the cache, %.2f without (target: flat within 20%%)\n", $2/w, $3/c}' "$OUT/keycount.dat" | tee -a "$REPORT"

say ""
say "== 6. RLS: a query on a protected table in an authenticated transaction vs the owner without RLS"
q -c "CREATE TABLE payments (id bigserial PRIMARY KEY, merchant_id uuid NOT NULL, amount_cents int NOT NULL)" \
  -c "INSERT INTO flint.merchants (id, name) SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'm' || i FROM generate_series(1, 199) i" \
  -c "INSERT INTO payments (merchant_id, amount_cents) SELECT CASE WHEN i % 200 = 0 THEN '$M'::uuid ELSE ('00000000-0000-0000-0000-' || lpad((i % 200)::text, 12, '0'))::uuid END, i % 1000 FROM generate_series(1, 1000000) i" \
  -c "SELECT flint_protect_table('payments', 'merchant_id', 'payments:read', 'payments:write')" \
  -c "VACUUM ANALYZE payments" -c "CREATE ROLE app" \
  -c "GRANT EXECUTE ON FUNCTION flint_authenticate(text) TO app" -c "GRANT SELECT ON payments TO app" \
  -c "GRANT USAGE ON SCHEMA bench TO app" -c "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA bench TO app" >/dev/null
RLS_Q="SELECT sum(amount_cents) FROM payments"
OWN_Q="SELECT sum(amount_cents) FROM payments WHERE merchant_id = '$M'"
rls_sum=0; own_sum=0
for r in $(seq 1 "$REPS"); do
    a=$(q -c "BEGIN" -c "SET LOCAL ROLE app" -c "SELECT count(*) FROM flint_authenticate('$TOK')" \
          -c "SELECT bench.time_ms(\$\$$RLS_Q\$\$, 50)" -c "COMMIT" | sed -n 2p)
    b=$(q -c "SELECT bench.time_ms(\$\$$OWN_Q\$\$, 50)")
    rls_sum=$(echo "$rls_sum + $a" | bc -l); own_sum=$(echo "$own_sum + $b" | bc -l)
done
say "$(BC_LINE_LENGTH=0 echo "scale=3; r=$rls_sum/$REPS; o=$own_sum/$REPS; print \"RLS \", r, \" ms, owner \", o, \" ms per query (5,000 of 1,000,000 rows): ratio \", r/o" | bc -l)  (target <= 1.1)"
q -c "SELECT rows_visible FROM (SELECT count(*) AS rows_visible FROM payments WHERE merchant_id = '$M') s" | sed 's/^/rows per merchant: /' | tee -a "$REPORT"

say ""
say "== 7. active keys: pgbench -M prepared -c 2 -j 2 verifying a random key among N, against the same token lookup hashed with sha256() (steady state: the last ${ACTIVE_STEADY}s of ${ACTIVE_SECS}s runs, $ACTIVE_ROUNDS round)"
q -c "SELECT bench.grow_keys('$M', 100000)" >/dev/null
q -c "VACUUM ANALYZE flint.api_keys, bench.keys" >/dev/null
active_key_scripts
: >"$OUT/active.dat"
declare -A atps
for n in $ACTIVE_SIZES; do atps[v$n]=0; atps[l$n]=0; done
for r in $(seq 1 "$ACTIVE_ROUNDS"); do
    line="round $r:"
    for n in $ACTIVE_SIZES; do
        for kind in v l; do
            script=$([ $kind = v ] && echo verify_random || echo lookup_random)
            t=$(pgb_steady "$script" "$n")
            atps[$kind$n]=$((atps[$kind$n] + t))
            line="$line $kind$n=$t"
        done
    done
    say "$line"
done
base=$(echo "${atps[v10]} / $ACTIVE_ROUNDS" | bc)
for n in $ACTIVE_SIZES; do
    v=$(echo "${atps[v$n]} / $ACTIVE_ROUNDS" | bc); l=$(echo "${atps[l$n]} / $ACTIVE_ROUNDS" | bc)
    say "$n active keys: verify $v tps, lookup+sha256 $l tps; verify/lookup = $(echo "scale=2; $v / $l" | bc); verify vs 10 keys = $(echo "scale=2; $v / $base" | bc)  (target >= 0.9)"
    echo "$n $v $l" >>"$OUT/active.dat"
done

say ""
say "== 8. log worker drain: the worker stopped (SIGSTOP), 16,000 rows queued, the time until all are inserted after SIGCONT"
for n in $ACTIVE_SIZES; do
    sed -i "/^$n /s/\$/ $(drain_rate "$n")/" "$OUT/active.dat"
    say "$n distinct keys in the 16,000 rows: $(awk -v n=$n '$1 == n {print $4}' "$OUT/active.dat") rows/s  (target >= 100,000)"
done

say ""
say "== 9. timing oracle: uncached lookups (flint.key_cache = off) of 20,000 unknown key ids vs 20,000 known ids with a wrong secret (median of $REPS, interleaved)"
q -c "CREATE TABLE bench.unknown AS SELECT (flint._mint_token('live', gen_random_uuid())).secret AS tok FROM generate_series(1, 20000)" \
  -c "CREATE TABLE bench.wrong AS SELECT (flint._mint_token('live', id)).secret AS tok FROM bench.keys ORDER BY random() LIMIT 20000" >/dev/null
UNK="SELECT count(*) FROM bench.unknown, LATERAL flint_check_key(tok, 'payments:read', '$M') c WHERE NOT c.ok"
WRG="SELECT count(*) FROM bench.wrong, LATERAL flint_check_key(tok, 'payments:read', '$M') c WHERE NOT c.ok"
read -r u_ms w_ms ratio < <(q -F' ' -c "SET flint.key_cache = off" -c "SELECT round(a_ms::numeric, 1), round(b_ms::numeric, 1), round(ratio::numeric, 3) FROM bench.compare(\$\$$UNK\$\$, \$\$$WRG\$\$, $REPS)" | tail -1)
say "unknown ids: $(echo "scale=2; $u_ms * 1000 / 20000" | bc) us/call, known ids with a wrong secret: $(echo "scale=2; $w_ms * 1000 / 20000" | bc) us/call: ratio unknown/known = $ratio  (target >= 0.95)"
# The attacker's case: ids of another merchant's keys, asked for as its own merchant.
OTH="SELECT count(*) FROM bench.wrong, LATERAL flint_check_key(tok, 'payments:read', '00000000-0000-0000-0000-000000000001') c WHERE NOT c.ok"
read -r u_ms w_ms ratio < <(q -F' ' -c "SET flint.key_cache = off" -c "SELECT round(a_ms::numeric, 1), round(b_ms::numeric, 1), round(ratio::numeric, 3) FROM bench.compare(\$\$$UNK\$\$, \$\$$OTH\$\$, $REPS)" | tail -1)
say "another merchant's key ids: unknown $(echo "scale=2; $u_ms * 1000 / 20000" | bc) us/call, known $(echo "scale=2; $w_ms * 1000 / 20000" | bc) us/call: ratio unknown/known = $ratio  (target >= 0.95)"

say ""
say "== 10. the cost of limits: a key with a rate limit, a quota and an allowlist against a key without (same form, client_ip given)"
LIMITED_TOK="$(q -c "SELECT tok FROM bench.keys WHERE n = 2")"
q -c "SELECT flint_set_key_limits(id, rate_limit => 1000000, rate_window => '1 second', remaining => 1000000000000,
                                  allowed_ips => '{10.0.0.0/8, ::/0}') FROM bench.keys WHERE n = 2" >/dev/null
PLAIN_Q="SELECT count(flint_verify_key('$TOK' || left(g::text, 0), 'payments:read', '$M', '10.0.0.1', 1)) FROM generate_series(1, 20000) g"
LIMIT_Q="SELECT count(flint_verify_key('$LIMITED_TOK' || left(g::text, 0), 'payments:read', '$M', '10.0.0.1', 1)) FROM generate_series(1, 20000) g"
q -c "$LIMIT_Q" >/dev/null  # warm: the first lease
read -r l_ms p_ms ratio < <(q -F' ' -c "SELECT round(a_ms::numeric, 1), round(b_ms::numeric, 1), round(ratio::numeric, 2) FROM bench.compare(\$\$$LIMIT_Q\$\$, \$\$$PLAIN_Q\$\$, $REPS)")
say "in-process, 20,000 calls: with limits $l_ms ms, without $p_ms ms: ratio $ratio  (target <= 1.1)"
echo "SELECT flint_verify_key(:tok, :scope, :merchant, '10.0.0.1', 1);" >"$DIR/verify_ip.sql"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"/*.sql
lt=0; pt=0
for r in $(seq 1 "$ROUNDS"); do
    read -r t _ < <(TOK="$LIMITED_TOK" pgb verify_ip); lt=$((lt + t))
    read -r t _ < <(pgb verify_ip); pt=$((pt + t))
done
say "end to end (pgbench, $ROUNDS rounds): with limits $((lt / ROUNDS)) tps, without $((pt / ROUNDS)) tps: ratio $(echo "scale=2; $lt / $pt" | bc)  (target >= 0.91, i.e. cost <= 1.1x)"

say ""
say "== 11. 1.3: a key whose scope comes from a role against a key holding it itself; the log with and without usage rollups"
ROLE_TOK="$(q -c "SELECT tok FROM bench.keys WHERE n = 3")"
q -c "SELECT flint_update_key(id, scopes => '{customers:read}') FROM bench.keys WHERE n = 3" >/dev/null
q -c "SELECT flint_create_role('$M', 'bench readers', '{payments:read}')" >/dev/null
q -c "SELECT flint_grant_role(id, 'bench readers') FROM bench.keys WHERE n = 3" >/dev/null
OWN_Q="SELECT count(flint_verify_key('$TOK' || left(g::text, 0), 'payments:read', '$M')) FROM generate_series(1, 20000) g"
ROLE_Q="SELECT count(flint_verify_key('$ROLE_TOK' || left(g::text, 0), 'payments:read', '$M')) FROM generate_series(1, 20000) g"
read -r ro_ms ow_ms ratio < <(q -F' ' -c "SELECT round(a_ms::numeric, 1), round(b_ms::numeric, 1), round(ratio::numeric, 3) FROM bench.compare(\$\$$ROLE_Q\$\$, \$\$$OWN_Q\$\$, $REPS)")
say "in-process, 20,000 calls: scope through a role $ro_ms ms, own scope $ow_ms ms: ratio $ratio  (target <= 1.05)"
# Rollups off: the worker writes flint.usage only while the table exists under that name.
# Back on, the mark moves past the rows of the round without: each round sums its own rows
# (else the next round's steps read them back from the table, and pay for both rounds).
ut=0; nt=0
for r in $(seq 1 "$ROUNDS"); do
    read -r t _ < <(pgb verify); ut=$((ut + t))
    q -c "ALTER TABLE flint.usage RENAME TO usage_bench_off" >/dev/null
    read -r t _ < <(pgb verify); nt=$((nt + t))
    q -c "ALTER TABLE flint.usage_bench_off RENAME TO usage; UPDATE flint.usage_watermark SET rolled_up_to = now()" >/dev/null
done
say "end to end (pgbench, $ROUNDS rounds): with rollups $((ut / ROUNDS)) tps, without $((nt / ROUNDS)) tps: ratio $(echo "scale=3; $ut / $nt" | bc)  (target >= 0.952, i.e. cost <= 1.05x)"
q -c "SELECT flint_flush_log()" >/dev/null
say "rollup rows: $(q -c "SELECT count(*) || ' for ' || sum(requests) || ' requests' FROM flint.usage")"

say ""
say "== 12. the log row: the worker's direct insert against binary COPY (test/bench/log_row.sh)"
LOG_ROW_ROUNDS=$([ -n "$QUICK" ] && echo 1 || echo 3) source "$ROOT/test/bench/log_row.sh"

say ""
gnuplot "$ROOT/test/bench/chart.gp" 2>/dev/null && say "charts: test/bench/results/keycount.svg, test/bench/results/active.svg"
say "report: $REPORT"
