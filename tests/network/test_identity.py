"""Node identity: an ed25519 key on disk, an id derived from it, signatures."""

import base64
import re
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bacalhau_flow.errors import BflowError
from bacalhau_flow.network.identity import Identity, node_id_for, verify


def test_load_or_create_persists_the_key_with_mode_0600(tmp_path):
    path = tmp_path / "deep" / "er" / "node.key"
    first = Identity.load_or_create(path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Identity.load_or_create(path)
    assert again.node_id == first.node_id
    assert again.public_key_b64 == first.public_key_b64


def _raw_seed(key) -> bytes:
    raw = serialization.Encoding.Raw
    return key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def test_a_raw_32_byte_seed_is_a_key_file(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "raw.key"
    path.write_bytes(_raw_seed(key))
    assert Identity.load_or_create(path).node_id == Identity(_raw_seed(key)).node_id


def test_key_files_are_pkcs8_pem_that_openssl_tools_read_and_write(tmp_path):
    """The PEM is written and read without `cryptography`; `cryptography` agrees with it."""
    ours = Identity.generate()
    theirs = serialization.load_pem_private_key(ours.private_pem(), password=None)
    assert isinstance(theirs, Ed25519PrivateKey)
    public = theirs.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert node_id_for(base64.urlsafe_b64encode(public).decode()) == ours.node_id

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "openssl.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    loaded = Identity.load_or_create(path)
    assert loaded.node_id == Identity(_raw_seed(key)).node_id
    assert loaded.private_pem() == path.read_bytes()


def test_a_pem_of_another_key_type_is_refused_with_a_hint(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ec.key"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(BflowError, match="not an ed25519 private key"):
        Identity.load_or_create(path)


BAD_PEM = b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("content", [b"garbage", BAD_PEM, b""])
def test_a_corrupt_key_file_raises_with_a_hint_to_delete_it(tmp_path, content):
    path = tmp_path / "node.key"
    path.write_bytes(content)
    with pytest.raises(BflowError) as e:
        Identity.load_or_create(path)
    assert "delete" in e.value.hint and str(path) in e.value.hint


def test_node_ids_derive_from_the_key_and_are_subject_safe():
    a, b = Identity.generate(), Identity.generate()
    assert a.node_id != b.node_id
    for ident in (a, b):
        assert re.fullmatch(r"n-[a-z2-7]{16}", ident.node_id)
        assert node_id_for(ident.public_key_b64) == ident.node_id
    with pytest.raises(ValueError):
        node_id_for("not base64!")


def test_sign_and_verify():
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"hello")
    assert verify(a.public_key_b64, b"hello", sig)
    assert not verify(a.public_key_b64, b"hellO", sig)
    assert not verify(b.public_key_b64, b"hello", sig)
    assert not verify(a.public_key_b64, b"hello", b.sign(b"hello"))


@pytest.mark.parametrize(
    "key, sig",
    [("", ""), ("!!!", "???"), (None, None), (123, b"x"), ("AAAA", "AAAA"), ("A" * 43 + "=", "A" * 86 + "==")],
)
def test_verify_never_raises_on_malformed_input(key, sig):
    assert verify(key, b"data", sig) is False
