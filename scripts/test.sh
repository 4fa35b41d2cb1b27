#!/usr/bin/env bash
# Set up everything the tests need, then run the whole test suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BFLOW_TEST_HOME=${BFLOW_TEST_HOME:-$(mktemp -d)}
exec .venv/bin/python -m pytest "$@"
