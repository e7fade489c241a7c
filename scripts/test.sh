#!/usr/bin/env bash
# Every test, from a fresh Debian machine: install what is needed, then run
# the unit, regression, isolation and TAP suites (test/run_tests.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install_deps.sh"
exec bash "$ROOT/test/run_tests.sh" "$@"
