# Sourced by test/bench/run.sh and test/bench/ceiling.sh: a throwaway cluster with
# 10,000 keys of one merchant, and the pgbench scripts of the end-to-end
# comparison. Needs ROOT and SECS set.
source "$ROOT/scripts/cluster.sh"
M='aaaaaaaa-0000-0000-0000-000000000001'
q() { cluster_psql -qAtX -v ON_ERROR_STOP=1 "$@"; }

# bench_cluster_start DIR: the cluster, the reference schema, the keys and
# their tokens; TOK is one of them.
bench_cluster_start() {
    DIR="$1"
    cluster_start "$DIR" "flint.log_queue_size = 262144" "max_parallel_workers_per_gather = 0" \
        "shared_buffers = 512MB" "flint.key_cache_size = 2000000" "max_connections = 20"
    [ "$(id -u)" = 0 ] && chmod 755 "$DIR" && cp "$ROOT"/test/bench/*.sql "$DIR"/ && chown postgres "$DIR"/*.sql
    SQLDIR="$([ "$(id -u)" = 0 ] && echo "$DIR" || echo "$ROOT/bench")"
    q -c "CREATE EXTENSION flint_keys" -f "$SQLDIR/reference_plpgsql.sql" -f "$SQLDIR/bench.sql" >/dev/null
    # The log worker retries every 5 s until the database exists: wait for it.
    until [ "$(q -c "SELECT worker_pid IS NOT NULL FROM flint_log_status()")" = t ]; do sleep 0.5; done
    q -c "INSERT INTO flint.merchants (id, name) VALUES ('$M', 'bench'); INSERT INTO ref.merchants (id) VALUES ('$M')"
    q -c "SELECT bench.grow_keys('$M', 10000); SELECT bench.make_tokens(10000)" >/dev/null
    TOK="$(q -c "SELECT tok FROM bench.keys WHERE n = 1")"
    echo 'SELECT 1;' >"$DIR/select1.sql"
    # Token, scope and merchant travel as bind parameters, as an application sends them.
    echo "SELECT :tok::text, :scope::text, :merchant::uuid;" >"$DIR/params.sql"
    echo "SELECT sha256(convert_to(:tok, 'UTF8'));" >"$DIR/sha256.sql"
    echo "SELECT flint_verify_key(:tok, :scope, :merchant);" >"$DIR/verify.sql"
    echo "SELECT ref.verify_key(:tok, :scope, :merchant);" >"$DIR/reference.sql"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"/*.sql
    return 0
}

# pgb NAME: runs $DIR/NAME.sql through pgbench (prepared, 2 clients) and prints
# "tps backends pgbench worker other", the last four in CPU µs per transaction
# (test/bench/cpu_split.py reads /proc over the middle of the run).
pgb() {
    python3 "$ROOT/test/bench/cpu_split.py" "$SECS" -- "${CLUSTER_USER[@]}" "$PGBIN/pgbench" -h "$DIR" -p "$CLUSTER_PORT" \
        -U postgres -n -M prepared -c 2 -j 2 -T "$SECS" -D tok="$TOK" -D scope=payments:read -D merchant="$M" \
        -f "$DIR/$1.sql" flint
}

# active_key_scripts: $DIR/verify_random.sql and $DIR/lookup_random.sql, a
# random key among :nkeys verified, or its token looked up and hashed.
active_key_scripts() {
    echo "\\set n random(1, :nkeys)
SELECT flint_verify_key(tok, :scope, :merchant) FROM bench.keys WHERE n = :n;" >"$DIR/verify_random.sql"
    echo "\\set n random(1, :nkeys)
SELECT sha256(convert_to(tok, 'UTF8')) FROM bench.keys WHERE n = :n;" >"$DIR/lookup_random.sql"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"/*.sql
    return 0
}

# pgb_steady NAME NKEYS: pgbench of $DIR/NAME.sql with :nkeys = NKEYS for
# ACTIVE_SECS seconds; prints the tps of the last ACTIVE_STEADY seconds (the
# connections' key caches are warm by then, as in a long-lived pool).
pgb_steady() {
    "${CLUSTER_USER[@]}" "$PGBIN/pgbench" -h "$DIR" -p "$CLUSTER_PORT" -U postgres -n -M prepared -c 2 -j 2 \
        -T "$ACTIVE_SECS" -P 1 -D nkeys="$2" -D scope=payments:read -D merchant="$M" -f "$DIR/$1.sql" flint 2>&1 |
        awk -v k="$ACTIVE_STEADY" '/^progress:/ {t[n++] = $4} END {s = 0; for (i = n - k; i < n; i++) s += t[i]; printf "%d\n", s / k}'
}

# drain_rate NKEYS: stops the log worker, queues 16,000 rows from NKEYS
# distinct keys, lets the worker go and prints rows/s until all are inserted
# (last_used_at is written later, once per flint.last_used_interval).
drain_rate() {
    local pid target t0 t1 overhead
    q -c "SELECT flint_flush_log()" >/dev/null
    pid=$(q -c "SELECT worker_pid FROM flint_log_status()")
    stop_idle_worker "$pid"
    q -c "SELECT count(flint_verify_key(k.tok, 'payments:read', '$M')) FROM generate_series(1, 16000) g
            JOIN bench.keys k ON k.n = 1 + (g - 1) % $1" >/dev/null
    target=$(q -c "SELECT queued FROM flint_log_status()")
    local wait="DO \$\$ BEGIN WHILE (SELECT inserted FROM flint_log_status()) < $target LOOP PERFORM pg_sleep(0.001); END LOOP; END \$\$"
    t0=$(date +%s.%N); q -c "SELECT 1" >/dev/null; t1=$(date +%s.%N)
    overhead=$(echo "$t1 - $t0" | bc)
    t0=$(date +%s.%N)
    kill -CONT "$pid"
    q -c "$wait" >/dev/null
    t1=$(date +%s.%N)
    echo "16000 / ($t1 - $t0 - $overhead)" | bc
}

# stop_idle_worker PID: SIGSTOPs the log worker while it sleeps on its latch.
# Stopped in the middle of a pass it may hold a lock or a buffer every
# session needs (seen: stopped during a roll-up, the next psql hung), so it
# is let go and stopped again until it is stopped while waiting.
stop_idle_worker() {
    local tries
    for tries in $(seq 1 500); do
        kill -STOP "$1"
        # Bounded: stopped while it held what a new session's start-up needs,
        # the check itself would wait for good (seen once: it is let go and tried again).
        [ "$(PGCONNECT_TIMEOUT=2 PGOPTIONS='-c statement_timeout=2s' q -c "SELECT wait_event FROM pg_stat_activity WHERE pid = $1" 2>/dev/null)" = Extension ] && return 0
        kill -CONT "$1"
        sleep 0.01
    done
    echo "the log worker never went idle" >&2
    return 1
}
