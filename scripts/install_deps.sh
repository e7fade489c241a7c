#!/usr/bin/env bash
# Installs everything flint_keys needs to build, demo and test on Debian 12.
# Works as root or, through sudo, as a user. Skips apt when all is present.
set -euo pipefail
PKGS=(
    build-essential cmake pkg-config
    postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev
    libssl-dev libkrb5-dev
    libgtest-dev libbenchmark-dev
    libipc-run-perl
    clang clang-format libclang-rt-14-dev
    pgbouncer python3 python3-psycopg python3-cryptography openssl
    python3-starlette python3-uvicorn python3-jinja2 python3-psycopg-pool
    gnuplot-nox valgrind
    chromium chromium-driver fonts-dejavu-core prometheus-postgres-exporter
    debhelper lintian postgresql-server-dev-all
    pgxnclient
    postgresql-15-auto-failover pg-auto-failover-cli
)
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)
if dpkg -s "${PKGS[@]}" >/dev/null 2>&1; then
    echo "dependencies already installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends "${PKGS[@]}"
