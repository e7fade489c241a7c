#!/usr/bin/env bash
# The main job: install what is needed, build and install flint_keys, start a
# throwaway cluster with the extension preloaded, and run a short psql demo of
# keys, verification and every error, rotation, revocation, the request log
# and row-level security. The cluster is removed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install_deps.sh"
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
make -C "$ROOT" -s >/dev/null
"${SUDO[@]}" make -C "$ROOT" -s install >/dev/null

source "$ROOT/scripts/cluster.sh"
DIR="$(mktemp -d /tmp/flint_demo.XXXXXX)"
trap 'cluster_stop; rm -rf "$DIR"' EXIT
cluster_start "$DIR"
echo "== throwaway cluster on socket $DIR, port $CLUSTER_PORT, flint_keys preloaded"
cluster_psql -v ON_ERROR_STOP=0 <"$ROOT/scripts/demo.sql"
