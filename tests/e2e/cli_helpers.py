"""Run `bflow` in this process (fast: one Prefect server for the session) or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from bacalhau_flow.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def bflow(*args: str | Path) -> Outcome:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def bflow_process(*args: str | Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ), **popen)


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
