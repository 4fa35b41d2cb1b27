"""Secrets: values a shard needs in its environment that no one else may see.

`transform.secrets: {NAME: "env:VAR" | "file:PATH" | "prefect:BLOCK"}` is read on the requester
when the job starts (`read_secrets`: one that cannot be read stops the run before any shard is
sent, naming it). For each attempt the values are sealed to the accepting node alone
(`seal`): a NaCl sealed box to the X25519 key that node's ed25519 identity converts to, whose
public half it announces in NodeInfo. They travel only in that accept, so no bid, log,
Prefect parameter, job record or content key holds them. The node opens them (`open_sealed`)
into the shard's environment and nowhere else. On the embedded network, which never leaves
the user's process, nothing is sealed.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import SealedBox
from nacl.signing import SigningKey, VerifyKey

from ..errors import BflowError


class SecretError(BflowError):
    """A secret that cannot be read on the requester, or opened on the node."""


def read_secrets(sources: dict[str, str], base_dir: Path | None = None) -> dict[str, str]:
    """NAME -> value for each `transform.secrets` entry. SecretError naming the first that
    cannot be read (an unset variable, a missing file, a Prefect block that is not there)."""
    values = {}
    for name, source in sources.items():
        kind, _, where = source.partition(":")
        values[name] = _read(name, kind, where, base_dir)
    return values


def _read(name: str, kind: str, where: str, base_dir: Path | None) -> str:
    if kind == "env":
        if where not in os.environ:
            raise SecretError(f"secret {name}: the environment variable {where} is not set",
                              hint=f"export {where}=... before the run", retryable=False)
        return os.environ[where]
    if kind == "file":
        path = Path(where).expanduser()
        path = path if path.is_absolute() or base_dir is None else base_dir / path
        try:
            return path.read_text().rstrip("\n")
        except OSError as e:
            raise SecretError(f"secret {name}: cannot read {path}: {e.strerror}", retryable=False) from None
    if kind == "prefect":
        try:
            from prefect.blocks.system import Secret

            return str(Secret.load(where).get())
        except Exception as e:  # noqa: BLE001 - a missing block, a server that does not answer
            raise SecretError(f"secret {name}: cannot load the Prefect Secret block {where!r} ({e})",
                              hint="create it in the Prefect UI (Blocks > Secret) or with "
                                   "`Secret(value=...).save(NAME)`", retryable=False) from None
    raise SecretError(f"secret {name}: unknown source {kind!r}", retryable=False)


def seal(values: dict[str, str], node_public_key: str) -> dict[str, str]:
    """Each value sealed to the node whose ed25519 public key (urlsafe base64) is given."""
    box = SealedBox(VerifyKey(base64.urlsafe_b64decode(node_public_key)).to_curve25519_public_key())
    return {name: base64.b64encode(box.encrypt(value.encode())).decode() for name, value in values.items()}


def open_sealed(sealed: dict[str, str], signing_key: SigningKey) -> dict[str, str]:
    """The values sealed to this node's key. SecretError when one was sealed to another key."""
    box = SealedBox(signing_key.to_curve25519_private_key())
    try:
        return {name: box.decrypt(base64.b64decode(value)).decode() for name, value in sealed.items()}
    except (CryptoError, ValueError) as e:
        raise SecretError(f"the shard's secrets cannot be opened on this node ({e}): they were sealed to "
                          "another node's key", retryable=True) from None
