#!/usr/bin/env bash
# Section 4 of run.sh alone, longer: ROUNDS rounds of the sha256 round trip
# against flint_verify_key (pgbench -c 2 -j 2, SECS each, alternating), with
# the CPU split per transaction; arguments are settings to try, e.g.
#
#   bash test/bench/e2e.sh
#   ROUNDS=6 SECS=10 bash test/bench/e2e.sh "flint.log_flush_interval = '200ms'"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-4}
make -C "$ROOT" -s >/dev/null
source "$ROOT/test/bench/common.sh"
DIR="$(mktemp -d /tmp/flint_e2e.XXXXXX)"
trap 'cluster_stop; rm -rf "$DIR"' EXIT
bench_cluster_start "$DIR"
for setting in "$@"; do q -c "ALTER SYSTEM SET $setting" >/dev/null; done
q -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
pgb verify >/dev/null # warm: the connections' key caches, the day's partition
pgb sha256 >/dev/null
echo "tps (CPU µs per transaction: backends + pgbench + log worker + other)"
for r in $(seq 1 "$ROUNDS"); do
    read -r st sb sp sw so < <(pgb sha256)
    read -r vt vb vp vw vo < <(pgb verify)
    echo "round $r: sha256 $st ($sb + $sp + $sw + $so)  verify $vt ($vb + $vp + $vw + $vo)  verify/sha256 = $(echo "scale=3; $vt / $st" | bc)"
done
