"""Security of the NATS connection, on real nats-servers: TLS (with client certificates),
user/password, a token, a JWT credentials file and an NKey user. Each refusal has its own
one-line message within seconds, a bad file fails naming it (exit 2), and no secret is
printed or on a command line. The certificates and NATS keys are made here."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import bflow, write_spec

from bacalhau_flow.network.devstack import Devstack
from bacalhau_flow.testing.requires import import_or_skip
from bacalhau_flow.transports.redact import redacted, split_credentials

server_mod = import_or_skip("bacalhau_flow_nats.server", "the NATS plugin (plugins/bacalhau-flow-nats)",
                            "bash scripts/setup.sh installs it")
security = import_or_skip("bacalhau_flow_nats.security", "the NATS plugin", "bash scripts/setup.sh installs it")
NatsServer = server_mod.NatsServer

PASSWORD = "s3cret-Pa55"
TOKEN = "t0ken-Zq9x"
ENV = ("BFLOW_NATS_TLS_CA", "BFLOW_NATS_TLS_CERT", "BFLOW_NATS_TLS_KEY", "BFLOW_NATS_CREDS",
       "BFLOW_NATS_TOKEN", "BFLOW_NATS_USER", "BFLOW_NATS_PASSWORD")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The CLI sets BFLOW_NATS_* in this process: monkeypatch puts them back after each test."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


# -- certificates (cryptography) and NATS keys (PyNaCl) --------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 (IP SAN), a client certificate, and another CA."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = tmp_path_factory.mktemp("certs")
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(name, key, issuer, signer, *, ca=False, san=None, usage=None):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return b.sign(signer, hashes.SHA256())

    files = {}

    def save(name, c, key):
        (d / f"{name}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        files[name], files[f"{name}_key"] = str(d / f"{name}.pem"), str(d / f"{name}.key")

    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    save("ca", cert("ca", ca_key, "ca", ca_key, ca=True), ca_key)
    save("other_ca", cert("other", other_key, "other", other_key, ca=True), other_key)
    key = ec.generate_private_key(ec.SECP256R1())
    save("server", cert("server", key, "ca", ca_key, san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                        usage=[ExtendedKeyUsageOID.SERVER_AUTH]), key)
    key = ec.generate_private_key(ec.SECP256R1())
    save("client", cert("client", key, "ca", ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH]), key)
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    files["garbage"] = str(d / "garbage.pem")
    return files


class Key:
    """An NKey pair of one kind (operator, account, user)."""

    def __init__(self, prefix: int):
        from nacl.signing import SigningKey

        self.signing = SigningKey(os.urandom(32))
        self.public = security.encode_public(prefix, bytes(self.signing.verify_key))
        self.seed = security.encode_seed(prefix, bytes(self.signing))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(issuer: Key, subject: Key, name: str, nats: dict) -> str:
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject.public,
              "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    signed = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return signed + "." + _b64(issuer.signing.sign(signed.encode()).signature)


def operator(tmp_path: Path, name: str) -> tuple[str, Path]:
    """Decentralized JWT auth: nats-server config (an operator, one account, MEMORY resolver)
    and a user's .creds file, as `nsc` would make them."""
    op, account, user = Key(security.PREFIX_OPERATOR), Key(security.PREFIX_ACCOUNT), Key(security.PREFIX_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                 "conn": -1, "leaf": -1}
    config = (f'operator: "{_jwt(op, op, "bflow-operator", {"type": "operator"})}"\nresolver: MEMORY\n'
              f'resolver_preload: {{ {account.public}: '
              f'"{_jwt(op, account, "bflow", {"type": "account", "limits": unlimited})}" }}\n')
    user_jwt = _jwt(account, user, "alice", {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
    creds = tmp_path / f"{name}.creds"
    creds.write_text(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
                     "************************* IMPORTANT *************************\n"
                     "NKEY Seed printed below can be used to sign and prove identity.\n\n"
                     f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n")
    return config, creds


# -- servers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(certs):
    """TLS that verifies client certificates, and a user with a password."""
    server = NatsServer(tls_cert=certs["server"], tls_key=certs["server_key"], tls_ca=certs["ca"], tls_verify=True,
                        user="alice", password=PASSWORD).start()
    yield server
    server.stop()


def tls_options(certs, ca="ca") -> list[str]:
    return ["--tls-ca", certs[ca], "--tls-cert", certs["client"], "--tls-key", certs["client_key"]]


def with_password(url: str, password: str = PASSWORD) -> str:
    return url.replace("://", f"://alice:{password}@")


def fresh(*args):
    """`bflow ARGS` as a new process would run it: without what earlier in-process calls set."""
    for name in ENV[:4]:
        os.environ.pop(name, None)  # clean_env restores the environment after the test
    return bflow(*args)


def timed(*args):
    start = time.monotonic()
    outcome = fresh(*args)
    return outcome, time.monotonic() - start


def one_error(outcome, *fragments: str, code: int = 1) -> None:
    assert outcome.code == code, (outcome.code, outcome.stderr)
    lines = outcome.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), outcome.stderr
    assert len(lines) <= 2 and "Traceback" not in outcome.stderr, outcome.stderr  # error: ... and hint: ...


# -- tests ------------------------------------------------------------------------------
def test_redacted_urls():
    assert redacted("nats://alice:pw@h:4222") == "nats://***@h:4222"
    assert redacted("tls://tok@a:1, nats://b:2,c:3") == "tls://***@a:1, nats://b:2,c:3"
    assert redacted("nats://h:4222") == "nats://h:4222" and redacted(None) is None
    assert split_credentials("nats://a%40b:p%3Aw@h:1,nats://h2:2") == ("nats://h:1,nats://h2:2",
                                                                         {"user": "a@b", "password": "p:w"})
    assert split_credentials("tls://tok@h:1") == ("tls://h:1", {"token": "tok"})
    assert split_credentials("nats://***@h:1") == ("nats://h:1", {})  # a redacted URL: take them from the environment


def test_job_over_tls_with_a_password(tmp_path, monkeypatch, certs, tls_server):
    """A devstack node and `bflow run` over tls:// with mutual TLS and a password: the job completes;
    `bflow nodes` sees the node; the password is printed nowhere."""
    for env, name in (("BFLOW_NATS_TLS_CA", "ca"), ("BFLOW_NATS_TLS_CERT", "client"), ("BFLOW_NATS_TLS_KEY", "client_key")):
        monkeypatch.setenv(env, certs[name])
    url = with_password(tls_server.url)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f0").write_text("over tls\n")
    spec = write_spec(tmp_path, f"pipeline: tls-job\ninput: {{url: {tmp_path / 'd'}, glob: '/*'}}\n"
                                "transform: {cmd: [sh, -c, 'cat $BFLOW_INPUTS/d/*']}\n")
    with Devstack(url, nodes=1, root=tmp_path / "nodes") as stack:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)  # from here on, the options say it
        listed = bflow("nodes", "--network", url, "--json", "--wait", "1", *tls_options(certs))
        assert listed.code == 0, listed.stderr
        assert [n["id"] for n in json.loads(listed.stdout)] == [stack.nodes[0].info().id]
        ran = bflow("run", spec, "--network", url, "--json", *tls_options(certs))
        assert ran.code == 0, ran.stdout + ran.stderr
        assert json.loads(ran.stdout)["state"] == "completed"
        picture = bflow("network", "--network", url, *tls_options(certs))
        assert picture.code == 0, picture.stderr
    for outcome in (listed, ran, picture):
        assert PASSWORD not in outcome.stdout + outcome.stderr
    assert "***@127.0.0.1" in picture.stdout  # the URL, as printed


def test_each_refusal_has_its_own_message(tmp_path, certs, tls_server):
    url = with_password(tls_server.url)
    wrong, took = timed("nodes", "--network", with_password(tls_server.url, "wrong"), *tls_options(certs))
    one_error(wrong, f"nats-server at 127.0.0.1:{tls_server.port} refused the credentials (Authorization Violation)")
    assert took < 4
    untrusted, took = timed("nodes", "--network", url, *tls_options(certs, ca="other_ca"))
    one_error(untrusted, f"the certificate of 127.0.0.1:{tls_server.port} is not trusted by --tls-ca "
                         f"{certs['other_ca']}: ", "unable to get local issuer certificate")
    assert took < 4
    system, took = timed("nodes", "--network", url, "--tls-cert", certs["client"], "--tls-key", certs["client_key"])
    one_error(system, "is not trusted by the system's certificate authorities")
    assert took < 4
    no_client_cert, took = timed("nodes", "--network", url, "--tls-ca", certs["ca"])
    one_error(no_client_cert, f"the TLS handshake with 127.0.0.1:{tls_server.port} failed")
    assert took < 4
    gone = NatsServer(monitor=False).start()
    gone.stop()  # a port nothing listens on
    unreachable, took = timed("nodes", "--network", with_password(f"tls://127.0.0.1:{gone.port}"), *tls_options(certs))
    one_error(unreachable, f"cannot reach NATS at tls://127.0.0.1:{gone.port} within 5s")
    assert took < 8
    for outcome in (wrong, untrusted, system, no_client_cert, unreachable):
        assert PASSWORD not in outcome.stderr and "wrong" not in outcome.stderr


def test_bad_files_are_named(tmp_path, certs, tls_server):
    url = with_password(tls_server.url)
    missing = fresh("nodes", "--network", url, "--tls-ca", tmp_path / "nope.pem")
    one_error(missing, f"--tls-ca {tmp_path / 'nope.pem'}: cannot read it: No such file or directory", code=2)
    garbage = fresh("nodes", "--network", url, "--tls-ca", certs["garbage"])
    one_error(garbage, f"--tls-ca {certs['garbage']}: not a PEM certificate file", code=2)
    not_a_cert = fresh("nodes", "--network", url, "--tls-ca", certs["ca"], "--tls-cert", certs["client_key"],
                       "--tls-key", certs["client_key"])
    one_error(not_a_cert, f"--tls-cert {certs['client_key']}: not a PEM certificate file", code=2)
    wrong_key = fresh("nodes", "--network", url, *tls_options(certs)[:4], "--tls-key", certs["server_key"])
    one_error(wrong_key, f"--tls-key {certs['server_key']}: not the PEM private key of {certs['client']}", code=2)
    bad_creds = tmp_path / "bad.creds"
    bad_creds.write_text("-----BEGIN USER NKEY SEED-----\nSUAXXXXNOTASEEDXXXX\n------END USER NKEY SEED------\n")
    malformed = fresh("nodes", "--network", url, *tls_options(certs), "--creds", bad_creds)
    one_error(malformed, f"--creds {bad_creds}: the NKey seed is malformed", code=2)
    not_creds = fresh("nodes", "--network", url, *tls_options(certs), "--creds", certs["ca"])
    one_error(not_creds, f"--creds {certs['ca']}: not a NATS credentials file", code=2)


def test_token_from_the_environment(tmp_path, monkeypatch):
    """A token server: the token comes from BFLOW_NATS_TOKEN, and is on no command line."""
    server = NatsServer(token=TOKEN).start()
    try:
        with open(f"/proc/{server.process.pid}/cmdline", "rb") as f:
            assert TOKEN.encode() not in f.read()
        monkeypatch.setenv("BFLOW_NATS_TOKEN", TOKEN)
        with Devstack(server.url, nodes=1, root=tmp_path / "nodes"):
            listed = bflow("nodes", "--network", server.url, "--json", "--wait", "1")
            assert listed.code == 0, listed.stderr
            assert len(json.loads(listed.stdout)) == 1
        monkeypatch.setenv("BFLOW_NATS_TOKEN", "not-it")
        one_error(bflow("nodes", "--network", server.url), "refused the credentials (Authorization Violation)")
        monkeypatch.delenv("BFLOW_NATS_TOKEN")
        one_error(bflow("nodes", "--network", server.url), "refused the credentials")
        in_url = bflow("nodes", "--network", server.url.replace("://", f"://{TOKEN}@"), "--wait", "0.2")
        assert in_url.code == 0, in_url.stderr
    finally:
        server.stop()


def test_jwt_credentials_file_and_nkey_user(tmp_path):
    """Decentralized JWT auth (operator, account, user .creds) and an NKey user (seed file)."""
    config, creds = operator(tmp_path, "alice")
    _, strangers = operator(tmp_path, "stranger")  # signed by another operator
    nkey = Key(security.PREFIX_USER)
    seed = tmp_path / "user.nk"
    seed.write_text(nkey.seed + "\n")
    jwt_server = NatsServer(config=config).start()
    nkey_server = NatsServer(config=f'authorization {{ users: [ {{ nkey: "{nkey.public}" }} ] }}').start()
    try:
        assert fresh("nodes", "--network", jwt_server.url, "--creds", creds, "--wait", "0.2").code == 0
        one_error(fresh("nodes", "--network", jwt_server.url, "--creds", strangers), "refused the credentials")
        one_error(fresh("nodes", "--network", jwt_server.url), "refused the credentials")
        assert fresh("nodes", "--network", nkey_server.url, "--creds", seed, "--wait", "0.2").code == 0
        one_error(fresh("nodes", "--network", nkey_server.url, "--creds", creds), "refused the credentials")
    finally:
        jwt_server.stop()
        nkey_server.stop()


def test_devstack_with_tls_and_a_token(tmp_path, certs):
    """`bflow devstack --server-cert/--server-key` runs its nats-server with TLS, and with the
    token of its environment; clients join with --tls-ca and the token. The token is on no
    command line."""
    env = dict(os.environ, BFLOW_NATS_TOKEN=TOKEN, BFLOW_HOME=str(tmp_path / "home"))
    log = tmp_path / "devstack.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bacalhau_flow.cli", "devstack", "--nodes", "1",
                                 "--server-cert", certs["server"], "--server-key", certs["server_key"],
                                 "--tls-ca", certs["ca"]], env=env, stdout=subprocess.PIPE, stderr=err)
    try:
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("tls://127.0.0.1:"), log.read_text()
        for pid in [proc.pid] + [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]:
            assert TOKEN.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.environ["BFLOW_NATS_TOKEN"] = TOKEN  # restored by clean_env
        listed = bflow("nodes", "--network", url, "--tls-ca", certs["ca"], "--json", "--wait", "1")
        assert listed.code == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 1
        os.environ["BFLOW_NATS_TOKEN"] = "not-it"
        one_error(bflow("nodes", "--network", url, "--tls-ca", certs["ca"]), "refused the credentials")
    finally:
        proc.terminate()
        proc.wait(20)
