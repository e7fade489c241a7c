#!/usr/bin/env bash
# The main job: install what the demo needs, build and install flint_keys,
# start a throwaway cluster with the extension preloaded, and run a short psql
# demo of keys, verification and every error code, rotation, revocation,
# traffic controls, a leak report, the request log and row-level security.
# The cluster is removed at the end. (scripts/test.sh installs the test tools.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
# What building and running the extension takes; nothing test-only.
DEMO_PKGS=(build-essential postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev libssl-dev libkrb5-dev)
echo "== 1/4 packages: ${DEMO_PKGS[*]}"
if ! dpkg -s "${DEMO_PKGS[@]}" >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${DEMO_PKGS[@]}" >/dev/null
fi
echo "== 2/4 building flint_keys (about a minute on 2 cores)"
make -C "$ROOT" -s -j"$(nproc)" >/dev/null
echo "== 3/4 installing it into $(pg_config --pkglibdir)"
"${SUDO[@]}" make -C "$ROOT" -s install >/dev/null

source "$ROOT/scripts/cluster.sh"
DIR="$(mktemp -d /tmp/flint_demo.XXXXXX)"
chmod 755 "$DIR"
trap 'cluster_stop; rm -rf "$DIR"' EXIT
echo "== 4/4 a throwaway cluster on socket $DIR, port $CLUSTER_PORT, flint_keys preloaded; the demo:"
cluster_start "$DIR"
cluster_psql -v ON_ERROR_STOP=0 <"$ROOT/scripts/demo.sql"
