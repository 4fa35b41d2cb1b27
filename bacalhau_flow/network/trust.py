"""Which requesters a compute node runs shards for.

A requester is known by the id of the key it signs with (`bflow id`; network/identity.py):
nobody can send as an id without its key. A node started by `bflow node` runs shards only for
the ids in `$BFLOW_HOME/trusted` (one a line; `#` starts a comment) and those given with
`--trust ID`; `bflow devstack` nodes trust the home that started them. `--open` makes a public
node, as Bacalhau's: any requester may run `docker` and `wasm` shards, which are confined, but
never `local` ones, which run as the node's user. A refused requester is told why in the bid,
so its job fails at once with that line instead of waiting.

`Trust.anyone()` is for nodes inside the user's own process (the embedded network) and for
in-process test devstacks: there is no one else to refuse.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from ..errors import BflowError

ID = re.compile(r"^n-[a-z2-7]{16}$")
CONFINED_EXECUTORS = ("docker", "wasm")  # what an open node runs for anyone


class Trust:
    def __init__(self, ids: Iterable[str] = (), *, open: bool = False, anyone: bool = False):
        self.ids = set(ids)
        self.open = open
        self._anyone = anyone

    @classmethod
    def anyone(cls) -> "Trust":
        return cls(anyone=True)

    def refusal(self, requester: str, executor: str) -> str | None:
        """Why this node will not run a shard of `requester` with `executor`; None if it will."""
        if self._anyone or requester in self.ids:
            return None
        how = (f"on the node, add {requester} to $BFLOW_HOME/trusted or start it with "
               f"`bflow node --trust {requester}`")
        if self.open and executor in CONFINED_EXECUTORS:
            return None
        if self.open:
            return (f"requester {requester} is not trusted to run {executor} shards (an open node runs only "
                    f"docker and wasm shards for anyone): {how}")
        return f"requester {requester} is not trusted by the node: {how}"


def check_id(value: str, where: str) -> str:
    value = value.strip()
    if not ID.match(value):
        raise BflowError(f"{where}: {value!r} is not a requester id",
                         hint="ids look like n-abcdefghijklmnop; `bflow id` prints this machine's")
    return value


def load_trusted(path: Path) -> list[str]:
    """The ids in a `trusted` file (none when it does not exist). A malformed line is an
    error naming the file and line, so a node never starts trusting less than was meant."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BflowError(f"cannot read {path}: {e.strerror}") from None
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(check_id(line, f"{path}:{number}"))
    return ids
