# Sourced by bench/run.sh and bench/ceiling.sh: a throwaway cluster with
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
    [ "$(id -u)" = 0 ] && chmod 755 "$DIR" && cp "$ROOT"/bench/*.sql "$DIR"/ && chown postgres "$DIR"/*.sql
    SQLDIR="$([ "$(id -u)" = 0 ] && echo "$DIR" || echo "$ROOT/bench")"
    q -c "CREATE EXTENSION flint_keys" -f "$SQLDIR/reference_plpgsql.sql" -f "$SQLDIR/bench.sql" >/dev/null
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
# (bench/cpu_split.py reads /proc over the middle of the run).
pgb() {
    python3 "$ROOT/bench/cpu_split.py" "$SECS" -- "${CLUSTER_USER[@]}" "$PGBIN/pgbench" -h "$DIR" -p "$CLUSTER_PORT" \
        -U postgres -n -M prepared -c 2 -j 2 -T "$SECS" -D tok="$TOK" -D scope=payments:read -D merchant="$M" \
        -f "$DIR/$1.sql" flint
}
