#!/usr/bin/env bash
# Set up bacalhau-flow on a fresh machine: a virtualenv in .venv with pinned packages.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
# requirements.lock pins every package (see README "Pinned versions" for why prefect and
# fastapi are held where they are). The hash of the lock file marks a finished install.
stamp=.venv/.bflow-installed
want=$(sha256sum requirements.lock pyproject.toml plugins/*/pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing pinned packages" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.lock
    .venv/bin/python -m pip install -q --no-deps -e . -e plugins/bacalhau-flow-nats
    echo "$want" > "$stamp"
fi
# Prefect's database migrations, once per Prefect version, rather than in every new server's first start
.venv/bin/bflow server prepare || echo "setup: no prepared Prefect database (new servers migrate their own)" >&2
echo "setup: ready ($(.venv/bin/bflow version))" >&2
