"""A node's identity is an ed25519 key (ARCHITECTURE.md decision 5).

The node id derives from the public key, so nobody can claim an id without holding its
key: `n-` and the first 16 characters of the lowercase, unpadded base32 of
sha256(raw public key). Ids are letters, digits and one hyphen, safe as a subject word.

Keys and signatures travel as urlsafe base64 of their raw bytes. Key files are PKCS#8 PEM
(what OpenSSL and `cryptography` write for ed25519), read and written here without the
`cryptography` package (7 MB of every node's memory); it is imported only for a PEM of
another shape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from functools import lru_cache

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..errors import BflowError

KNOWN_KEYS = 1 << 14  # keys whose node id and verifier are kept: a requester hears every node

_PUBLIC_KEY_LEN = 32
_SIGNATURE_LEN = 64
_SEED_LEN = 32
# The DER of a PKCS#8 ed25519 private key, up to its 32-byte seed (RFC 8410, section 7):
# SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }.
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PEM_LABEL = "PRIVATE KEY"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict urlsafe base64 decode. Raises ValueError (binascii.Error) or TypeError."""
    return base64.b64decode(text, altchars=b"-_", validate=True)


@lru_cache(maxsize=KNOWN_KEYS)  # every message is checked against its sender's id
def node_id_for(public_key_b64: str) -> str:
    """The node id of a public key (urlsafe base64 of its 32 raw bytes).

    Raises ValueError when the key is not 32 bytes of urlsafe base64.
    """
    try:
        raw = _unb64(public_key_b64)
    except (binascii.Error, TypeError, ValueError) as e:
        raise ValueError(f"not a base64 public key: {public_key_b64!r}") from e
    if len(raw) != _PUBLIC_KEY_LEN:
        raise ValueError(f"an ed25519 public key has {_PUBLIC_KEY_LEN} bytes, not {len(raw)}")
    digest = base64.b32encode(hashlib.sha256(raw).digest()).decode("ascii")
    return "n-" + digest.rstrip("=").lower()[:16]


def verify(public_key_b64: str, data: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` is a valid ed25519 signature of `data` by the key.

    Never raises: a malformed key or signature, or one of the wrong type, gives False.
    """
    try:
        raw_key = _unb64(public_key_b64)
        raw_sig = _unb64(signature_b64)
        if len(raw_key) != _PUBLIC_KEY_LEN or len(raw_sig) != _SIGNATURE_LEN:
            return False
        _verify_key(raw_key).verify(bytes(data), raw_sig)
        return True
    except (BadSignatureError, binascii.Error, TypeError, ValueError):
        return False


@lru_cache(maxsize=KNOWN_KEYS)
def _verify_key(raw: bytes) -> VerifyKey:
    # libsodium (PyNaCl) verifies ed25519 about 5x faster than cryptography's OpenSSL build
    # here (~90 us vs ~430 us); every message is checked, so it matters per shard.
    return VerifyKey(raw)


class Identity:
    """One node's ed25519 private key (its 32-byte seed), its public key and its node id."""

    def __init__(self, seed: bytes):
        if len(seed) != _SEED_LEN:
            raise ValueError(f"an ed25519 seed has {_SEED_LEN} bytes, not {len(seed)}")
        self._signer = SigningKey(bytes(seed))
        self.public_key_b64 = _b64(self._signer.verify_key.encode())
        self.node_id = node_id_for(self.public_key_b64)

    @classmethod
    def generate(cls) -> "Identity":
        """A fresh identity that lives only in memory."""
        return cls(os.urandom(_SEED_LEN))

    @classmethod
    def load_or_create(cls, path: Path) -> "Identity":
        """The identity kept in the key file at `path`, made (mode 0600) if there is none.

        The file is a PEM private key (what this writes) or the raw 32-byte seed.
        Parent folders are created. Raises BflowError when the file cannot be read or
        written, or does not hold an ed25519 private key; the hint says to delete it.
        """
        path = Path(path)
        if not path.exists():
            identity = cls.generate()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return cls._load(path)  # another process made it first: share its identity
            except OSError as e:
                raise BflowError(f"cannot create the node key {path}: {e.strerror or e}") from e
            with os.fdopen(fd, "wb") as f:
                f.write(identity.private_pem())
            return identity
        return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> "Identity":
        hint = f"delete {path} to make a new key (the node gets a new id)"
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BflowError(f"cannot read the node key {path}: {e.strerror or e}", hint=hint) from e
        if data.lstrip().startswith(b"-----BEGIN"):
            seed = _seed_of_pem(data)
        else:
            seed = data if len(data) == _SEED_LEN else None
        if seed is None:
            raise BflowError(f"the node key {path} is not an ed25519 private key", hint=hint)
        return cls(seed)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (what `load_or_create` writes)."""
        body = base64.encodebytes(_PKCS8_PREFIX + bytes(self._signer)).decode("ascii")
        return f"-----BEGIN {_PEM_LABEL}-----\n{body}-----END {_PEM_LABEL}-----\n".encode("ascii")

    @property
    def signing_key(self) -> SigningKey:
        """The key itself, for what needs more than signatures (opening sealed secrets)."""
        return self._signer

    def sign(self, data: bytes) -> str:
        """The ed25519 signature of `data`, as urlsafe base64."""
        return _b64(self._signer.sign(data).signature)

    def __repr__(self) -> str:
        return f"Identity({self.node_id})"


def _seed_of_pem(data: bytes) -> bytes | None:
    """The seed of an unencrypted ed25519 private key in PEM, or None for anything else."""
    lines = data.decode("ascii", "replace").strip().splitlines()
    framed = lines[:1] == [f"-----BEGIN {_PEM_LABEL}-----"] and lines[-1:] == [f"-----END {_PEM_LABEL}-----"]
    if framed and len(lines) >= 3:
        try:
            der = base64.b64decode("".join(lines[1:-1]), validate=True)
        except (binascii.Error, ValueError):
            return None
        if der.startswith(_PKCS8_PREFIX) and len(der) == len(_PKCS8_PREFIX) + _SEED_LEN:
            return der[len(_PKCS8_PREFIX):]
    return _seed_of_other_pem(data)


def _seed_of_other_pem(data: bytes) -> bytes | None:
    """PEM forms this module does not parse itself (PKCS#8 v2 with the public key, say)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return None  # corrupt, encrypted or unsupported PEM
    if not isinstance(key, Ed25519PrivateKey):
        return None
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
