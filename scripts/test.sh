#!/usr/bin/env bash
# Set up everything the tests need, then run the whole test suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The docker executor's tests need a Docker engine: install and start one where we can (CI);
# elsewhere they skip, and in CI (CI=true) a missing engine fails them.
if [ "$(id -u)" = 0 ] || docker info >/dev/null 2>&1; then
    bash scripts/docker-engine.sh
fi
export BFLOW_TEST_HOME=${BFLOW_TEST_HOME:-$(mktemp -d)}
exec .venv/bin/python -m pytest "$@"
