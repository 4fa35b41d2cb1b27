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
# The local executor's spawn straight into a cgroup (bacalhau_flow/executors/spawn.py); without a
# C compiler commands join their cgroup through /bin/sh, ~0.6 ms more a shard
spawn_src=bacalhau_flow/executors/spawn_into_cgroup.c spawn_lib=bacalhau_flow/executors/_spawn_into_cgroup.so
if [ ! -f "$spawn_lib" ] || [ "$spawn_src" -nt "$spawn_lib" ]; then
    if command -v "${CC:-cc}" >/dev/null; then
        echo "setup: building $spawn_lib" >&2
        if "${CC:-cc}" -O2 -Wall -shared -fPIC -o "$spawn_lib.tmp" "$spawn_src"; then
            mv "$spawn_lib.tmp" "$spawn_lib"
        else
            echo "setup: could not build $spawn_lib: commands will join their cgroup through /bin/sh" >&2
        fi
    else
        echo "setup: no C compiler (cc): commands will join their cgroup through /bin/sh (apt-get install gcc)" >&2
    fi
fi
# Prefect's database migrations, once per Prefect version, rather than in every new server's first start
.venv/bin/bflow server prepare || echo "setup: no prepared Prefect database (new servers migrate their own)" >&2
echo "setup: ready ($(.venv/bin/bflow version))" >&2
