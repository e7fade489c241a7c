# Sourced by the demo and benchmark scripts: a throwaway PostgreSQL 15
# cluster with flint_keys preloaded, on a Unix socket only, run as the
# postgres user when we are root (PostgreSQL refuses to run as root).
#   cluster_start DIR [extra postgresql.conf lines...]   cluster_psql ARGS...   cluster_stop
PGBIN="$(pg_config --bindir)"
CLUSTER_DIR=""
CLUSTER_PORT="${CLUSTER_PORT:-54329}"
CLUSTER_USER=()
[ "$(id -u)" = 0 ] && CLUSTER_USER=(runuser -u postgres --)

cluster_start() {
    CLUSTER_DIR="$1"
    shift
    mkdir -p "$CLUSTER_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$CLUSTER_DIR"
    "${CLUSTER_USER[@]}" "$PGBIN/initdb" -D "$CLUSTER_DIR/data" -A trust -U postgres -E UTF8 --no-locale >"$CLUSTER_DIR/initdb.log"
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$CLUSTER_DIR'"
        echo "port = $CLUSTER_PORT"
        echo "shared_preload_libraries = 'flint_keys'"
        echo "flint.database = 'flint'"
        for line in "$@"; do echo "$line"; done
    } | "${CLUSTER_USER[@]}" tee -a "$CLUSTER_DIR/data/postgresql.conf" >/dev/null
    "${CLUSTER_USER[@]}" "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w start >/dev/null
    "${CLUSTER_USER[@]}" "$PGBIN/psql" -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres -d postgres -qXc "CREATE DATABASE flint"
}

cluster_psql() {
    "${CLUSTER_USER[@]}" "$PGBIN/psql" -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres -d flint -X "$@"
}

cluster_stop() {
    [ -n "$CLUSTER_DIR" ] && "${CLUSTER_USER[@]}" "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}
