"""`--tls-ca`, `--tls-cert`, `--tls-key`, `--creds`: how a command secures its NATS connection.

`secure()` puts them into the environment (BFLOW_NATS_TLS_CA, BFLOW_NATS_TLS_CERT,
BFLOW_NATS_TLS_KEY, BFLOW_NATS_CREDS), where the NATS transport reads them when it connects:
so the processes a command starts (a detached run, `serve`'s runs) have them too, as
`--advertise` reaches them through BFLOW_ADVERTISE. Credentials in the network URL
(`nats://user:pass@host:port`, `nats://token@host:port`) move into the environment as well
(BFLOW_NATS_USER/BFLOW_NATS_PASSWORD, BFLOW_NATS_TOKEN): the URL the command goes on with,
prints and hands on reads `nats://***@host:port`, so no secret is printed or on a command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import typer

from ..errors import BflowError
from ..transports.redact import redacted, split_credentials

TLS_CA = "BFLOW_NATS_TLS_CA"
TLS_CERT = "BFLOW_NATS_TLS_CERT"
TLS_KEY = "BFLOW_NATS_TLS_KEY"
CREDS = "BFLOW_NATS_CREDS"
TOKEN, USER, PASSWORD = "BFLOW_NATS_TOKEN", "BFLOW_NATS_USER", "BFLOW_NATS_PASSWORD"

TLS_CA_OPTION = typer.Option(None, "--tls-ca", metavar="FILE",
                             help="CA certificate (PEM) the nats-server's certificate must chain to "
                                  "(default: the system's CAs)")
TLS_CERT_OPTION = typer.Option(None, "--tls-cert", metavar="FILE",
                               help="client certificate (PEM), for a nats-server that verifies clients (mutual TLS)")
TLS_KEY_OPTION = typer.Option(None, "--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
CREDS_OPTION = typer.Option(None, "--creds", metavar="FILE",
                            help="NATS credentials file (user JWT and NKey seed, as nsc writes it), or an NKey seed")
SERVER_CERT_OPTION = typer.Option(None, "--server-cert", metavar="FILE",
                                  help="run the devstack's nats-server with TLS, with this certificate (PEM)")
SERVER_KEY_OPTION = typer.Option(None, "--server-key", metavar="FILE", help="private key (PEM) of --server-cert")


class SecurityFileError(BflowError):
    """A file named by --tls-ca, --tls-cert, --tls-key or --creds cannot be read."""

    exit_code = 2


def _readable(option: str, path: Path) -> str:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise SecurityFileError(f"{option} {path}: cannot read it: {e.strerror or e}",
                                hint=f"give {option} a file that exists and is readable") from None
    return str(path.expanduser().absolute())


def secure(network: Optional[str], tls_ca: Optional[Path] = None, tls_cert: Optional[Path] = None,
           tls_key: Optional[Path] = None, creds: Optional[Path] = None, *,
           warn: Callable[[str], None] | None = None) -> Optional[str]:
    """Set this process's NATS security from the options and the URL; return the URL to go on
    with (its credentials, if any, now in the environment: `***` in their place)."""
    for option, env, value in (("--tls-ca", TLS_CA, tls_ca), ("--tls-cert", TLS_CERT, tls_cert),
                               ("--tls-key", TLS_KEY, tls_key), ("--creds", CREDS, creds)):
        if value is not None:
            os.environ[env] = _readable(option, Path(value))
    if not network:
        return network
    _, found = split_credentials(network)
    if not found:
        return network
    for name in (TOKEN, USER, PASSWORD):
        os.environ.pop(name, None)
    if "token" in found:
        os.environ[TOKEN] = found["token"]
    else:
        os.environ[USER], os.environ[PASSWORD] = found["user"], found["password"]
    if warn is not None:
        warn(f"the credentials in --network are not stored: the processes that use it need them as ${USER} "
             f"and ${PASSWORD}, or ${TOKEN}")
    return redacted(network)


def server_security(server_cert: Optional[Path], server_key: Optional[Path]) -> dict:
    """NatsServer settings for a devstack's own nats-server: TLS with --server-cert/--server-key
    (verifying clients by --tls-ca when --tls-cert is given too: its nodes present that), and the
    token or user and password of the environment. Empty when there are none."""
    if (server_cert is None) != (server_key is None):
        raise SecurityFileError("--server-cert and --server-key go together",
                                hint="give both: the certificate of the devstack's nats-server and its key")
    settings: dict = {}
    if server_cert is not None:
        settings.update(tls_cert=_readable("--server-cert", Path(server_cert)),
                        tls_key=_readable("--server-key", Path(server_key)))
        if os.environ.get(TLS_CA):
            settings["tls_ca"] = os.environ[TLS_CA]
            settings["tls_verify"] = bool(os.environ.get(TLS_CERT))
    if os.environ.get(TOKEN):
        settings["token"] = os.environ[TOKEN]
    elif os.environ.get(USER) or os.environ.get(PASSWORD):
        settings.update(user=os.environ.get(USER, ""), password=os.environ.get(PASSWORD, ""))
    return settings
