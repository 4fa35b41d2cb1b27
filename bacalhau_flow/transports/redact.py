"""Network URLs and their secrets: what may be printed, and what the transport sends.

A URL may carry credentials (`nats://user:pass@host:4222`, `nats://token@host:4222`);
anything that prints or logs a URL prints `redacted(url)` instead (`nats://***@host:4222`).
`***` as the credentials of a URL means "none here": a transport takes them from its
environment (BFLOW_NATS_TOKEN, BFLOW_NATS_USER/BFLOW_NATS_PASSWORD), so a redacted URL still
works in a process that has them.
"""

from __future__ import annotations

from urllib.parse import unquote

MASK = "***"


def _parts(url: str) -> list[str]:
    return url.split(",")


def _split_one(part: str) -> tuple[str, str | None]:
    """`scheme://userinfo@host:port/...` -> (`scheme://host:port/...`, `userinfo`)."""
    scheme, sep, rest = part.partition("://")
    if not sep:
        scheme, rest = "", part
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return part, None
    userinfo, _, host = netloc.rpartition("@")
    return (f"{scheme}://" if sep else "") + host + slash + path, userinfo


def redacted(url: str | None) -> str | None:
    """`url` with the credentials of each of its servers replaced by `***`."""
    if not url:
        return url
    out = []
    for part in _parts(url):
        bare, userinfo = _split_one(part)
        if userinfo is None:
            out.append(part)
        else:
            lead = part[: len(part) - len(part.lstrip())]
            stripped = bare.strip()
            scheme, sep, rest = stripped.partition("://")
            out.append(lead + (f"{scheme}://{MASK}@{rest}" if sep else f"{MASK}@{stripped}"))
    return ",".join(out)


def split_credentials(url: str | None) -> tuple[str | None, dict[str, str]]:
    """The URL without credentials, and the credentials of its first server that has some:
    {"user", "password"} or {"token"}. `***` (a redacted URL) counts as none."""
    if not url:
        return url, {}
    found: dict[str, str] = {}
    out = []
    for part in _parts(url):
        bare, userinfo = _split_one(part)
        out.append(bare)
        if userinfo is None or userinfo == MASK or found:
            continue
        user, colon, password = userinfo.partition(":")
        if colon:
            found = {"user": unquote(user), "password": unquote(password)}
        elif user:
            found = {"token": unquote(user)}
    return ",".join(out), found
