"""`bflow server start|stop|status|prepare`: the local Prefect server every bflow command shares."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from . import render


def start(port: Optional[int] = typer.Option(None, help="port to listen on (127.0.0.1); default: a free one, "
                                                         "or $BFLOW_PREFECT_PORT"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")):
    """Start the local Prefect server (detached; it stays up) unless it runs already."""
    from ..flow.server import ensure_server

    info = ensure_server(echo=_say, port=port)
    _show(info, as_json)


def stop():
    """Stop the local Prefect server."""
    from ..flow.server import stop_server

    info = stop_server()
    _say(f"stopped the Prefect server (pid {info.pid})" if info else "no Prefect server was running")


def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")):
    """The local Prefect server's API and UI URLs; exit 1 when none runs."""
    from ..flow.server import status as server_status

    info = server_status()
    if info is None:
        if as_json:
            sys.stdout.write("null\n")
        _say("no Prefect server is running (the next `bflow run` starts one, or `bflow server start`)")
        raise typer.Exit(1)
    _show(info, as_json)


def prepare():
    """Migrate an empty Prefect database once, for new servers to start from (setup.sh runs it).

    Each new $BFLOW_HOME's server then starts from a copy of it instead of ~10 s of migrations."""
    from ..flow.prefect_db import prepare as prepare_database, template_path

    if template_path().is_file():
        _say(f"the empty Prefect database is prepared already: {template_path()}")
        return
    _say("migrating an empty Prefect database (once per Prefect version) ...")
    _say(f"prepared: {prepare_database()}")


def _show(info, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"api_url": info.api_url, "ui_url": info.ui_url, "pid": info.pid}) + "\n")
        return
    print(f"api: {info.api_url}\nui:  {info.ui_url}\npid: {info.pid} (Prefect {info.prefect_version})")


def _say(line: str) -> None:
    render.err.print(line, highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer, command) -> None:
    group = typer.Typer(no_args_is_help=True, help="The local Prefect server every bflow command shares.")
    for fn in (start, stop, status, prepare):
        command(fn.__name__, on=group)(fn)
    app.add_typer(group, name="server")
