"""How a NatsTransport proves who it is and whom it talks to: TLS and NATS credentials.

Read from the environment when the transport connects (the `--tls-ca`, `--tls-cert`,
`--tls-key`, `--creds` options of bflow set these, so the processes it starts have them too):

- BFLOW_NATS_TLS_CA: CA file (PEM) the server's certificate must chain to (default: the
  system's CAs); BFLOW_NATS_TLS_CERT / BFLOW_NATS_TLS_KEY: a client certificate and its key,
  for servers that verify clients (mutual TLS).
- BFLOW_NATS_CREDS: a NATS credentials file (`.creds`: a user JWT and its NKey seed, as `nsc`
  writes them), or a file holding just an NKey seed (`SU...`) for an NKey user.
- BFLOW_NATS_TOKEN, or BFLOW_NATS_USER and BFLOW_NATS_PASSWORD, unless the URL has credentials
  (`nats://user:pass@host:port`, `nats://token@host:port`).

NKeys are decoded and nonces signed here with PyNaCl (a dependency of bacalhau-flow), so the
`nkeys` package that nats-py would import is not needed. Secrets are read from files or the
environment only: nothing here puts them on a command line or into a log.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping

from bacalhau_flow.transports.base import TransportError

ENV_TLS_CA = "BFLOW_NATS_TLS_CA"
ENV_TLS_CERT = "BFLOW_NATS_TLS_CERT"
ENV_TLS_KEY = "BFLOW_NATS_TLS_KEY"
ENV_CREDS = "BFLOW_NATS_CREDS"
ENV_TOKEN = "BFLOW_NATS_TOKEN"
ENV_USER = "BFLOW_NATS_USER"
ENV_PASSWORD = "BFLOW_NATS_PASSWORD"

_OPTION = {ENV_TLS_CA: "--tls-ca", ENV_TLS_CERT: "--tls-cert", ENV_TLS_KEY: "--tls-key", ENV_CREDS: "--creds"}


class NatsConfigError(TransportError):
    """A certificate, key or credentials file is missing, unreadable or malformed."""

    exit_code = 2
    retryable = False


def _bad(env: str, path: str, why: str) -> NatsConfigError:
    return NatsConfigError(f"{_OPTION[env]} {path}: {why}", hint=f"set by {_OPTION[env]} FILE or ${env}")


def _read(env: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _bad(env, path, f"cannot read it: {e.strerror or e}") from None


# -- NKeys ------------------------------------------------------------------------
PREFIX_SEED = 18 << 3  # 'S'
PREFIX_OPERATOR = 14 << 3  # 'O'
PREFIX_ACCOUNT = 0  # 'A'
PREFIX_USER = 20 << 3  # 'U'


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw + struct.pack("<H", _crc16(raw))).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    text = text.strip()
    raw = base64.b32decode(text + "=" * (-len(text) % 8))
    if len(raw) < 3 or struct.unpack("<H", raw[-2:])[0] != _crc16(raw[:-2]):
        raise ValueError("bad checksum")
    return raw[:-2]


def encode_seed(prefix: int, raw_seed: bytes) -> str:
    """An NKey seed (`SU...` for a user, `SA...` an account, `SO...` an operator) of 32 raw bytes."""
    return _b32(bytes([PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3]) + raw_seed)


def encode_public(prefix: int, raw_public: bytes) -> str:
    return _b32(bytes([prefix]) + raw_public)


@dataclass
class NKey:
    """A key pair from an NKey seed: its public key (`U...`) and a signer of nonces."""

    prefix: int
    raw_seed: bytes = field(repr=False)

    @classmethod
    def from_seed(cls, seed: str) -> "NKey":
        raw = _unb32(seed)
        if len(raw) != 34 or raw[0] & 0xF8 != PREFIX_SEED:
            raise ValueError("not an NKey seed")
        return cls(((raw[0] & 7) << 5) | ((raw[1] & 0xF8) >> 3), raw[2:])

    def _signer(self):
        from nacl.signing import SigningKey

        return SigningKey(self.raw_seed)

    @property
    def public_key(self) -> str:
        return encode_public(self.prefix, bytes(self._signer().verify_key))

    def sign(self, data: bytes) -> bytes:
        return self._signer().sign(data).signature


_JWT_BLOCK = re.compile(r"-{3,}\s*BEGIN NATS USER JWT\s*-{3,}\s*\n\s*(\S+)")
_SEED_BLOCK = re.compile(r"-{3,}\s*BEGIN USER NKEY SEED\s*-{3,}\s*\n\s*(\S+)")


def read_creds(path: str) -> tuple[str | None, NKey]:
    """(user JWT or None, NKey) from a `.creds` file, or from a file that holds only a seed."""
    text = _read(ENV_CREDS, path).decode("utf-8", "replace")
    jwt_match, seed_match = _JWT_BLOCK.search(text), _SEED_BLOCK.search(text)
    if seed_match:
        seed, jwt = seed_match.group(1), jwt_match.group(1) if jwt_match else None
    elif re.fullmatch(r"\s*S[A-Z2-7]{50,}\s*", text):
        seed, jwt = text.strip(), None
    else:
        raise _bad(ENV_CREDS, path, "not a NATS credentials file: no `BEGIN USER NKEY SEED` block, nor an NKey seed")
    try:
        key = NKey.from_seed(seed)
    except (ValueError, TypeError) as e:
        raise _bad(ENV_CREDS, path, f"the NKey seed is malformed ({e})") from None
    if key.prefix != PREFIX_USER:
        raise _bad(ENV_CREDS, path, "the NKey seed is not a user's (SU...)")
    if jwt is not None and jwt.count(".") != 2:
        raise _bad(ENV_CREDS, path, "the user JWT is malformed (not three dot-separated parts)")
    return jwt, key


# -- TLS ----------------------------------------------------------------------------
def tls_context(env: Mapping[str, str]) -> ssl.SSLContext | None:
    """The client's TLS context from BFLOW_NATS_TLS_*; None when none is set."""
    ca, cert, key = env.get(ENV_TLS_CA) or None, env.get(ENV_TLS_CERT) or None, env.get(ENV_TLS_KEY) or None
    if not (ca or cert or key):
        return None
    context = ssl.create_default_context()
    if ca:
        _read(ENV_TLS_CA, ca)
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as e:
            raise _bad(ENV_TLS_CA, ca, f"not a PEM certificate file ({e.reason or e})") from None
    if key and not cert:
        raise _bad(ENV_TLS_KEY, key, "a client key needs its certificate: give it with --tls-cert")
    if cert:
        _read(ENV_TLS_CERT, cert)
        try:
            ssl.create_default_context().load_verify_locations(cafile=cert)
        except ssl.SSLError as e:
            raise _bad(ENV_TLS_CERT, cert, f"not a PEM certificate file ({e.reason or e})") from None
        if key:
            _read(ENV_TLS_KEY, key)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            if key:
                raise _bad(ENV_TLS_KEY, key, f"not the PEM private key of {cert} ({e.reason or e})") from None
            raise _bad(ENV_TLS_CERT, cert, f"holds no private key; give it with --tls-key ({e.reason or e})") from None
    return context


# -- all of it ------------------------------------------------------------------------
@dataclass
class Security:
    """What NatsTransport passes to nats-py's connect(), and what the error messages name."""

    options: dict[str, Any] = field(default_factory=dict, repr=False)
    ca: str | None = None
    public_nkey: str | None = None  # an NKey user (no JWT): nats-py sends it only if told

    @property
    def tls(self) -> bool:
        return "tls" in self.options


def security(url_credentials: Mapping[str, str], env: Mapping[str, str] | None = None) -> Security:
    """Options for nats-py's connect(): credentials from the URL first, then the environment."""
    env = os.environ if env is None else env
    options: dict[str, Any] = {}
    context = tls_context(env)
    if context is not None:
        options["tls"] = context
    out = Security(options, ca=env.get(ENV_TLS_CA) or None)
    creds = env.get(ENV_CREDS) or None
    if creds:
        jwt, key = read_creds(creds)

        def sign(nonce: str) -> bytes:
            return base64.b64encode(key.sign(nonce.encode()))

        options["signature_cb"] = sign
        if jwt is not None:
            options["user_jwt_cb"] = lambda: jwt.encode()
        else:
            out.public_nkey = key.public_key
    if url_credentials:
        options.update(url_credentials)  # {"user", "password"} or {"token"}
    elif env.get(ENV_TOKEN):
        options["token"] = env[ENV_TOKEN]
    elif env.get(ENV_USER) or env.get(ENV_PASSWORD):
        options["user"], options["password"] = env.get(ENV_USER, ""), env.get(ENV_PASSWORD, "")
    return out
