"""`batch_size: auto`: how many datums a shard gets, from the number of datums and the
capacity of the nodes that can run the pipeline's shards.

The rule (PRODUCT.md section 3):

- **Slots.** A node that can run the shard (its labels match `selector`, it has the executor,
  and its total capacity holds the shard's `resources`) runs as many shards at once as its
  capacity holds: the least of cpu / cpu asked, memory / memory asked, disk / disk asked (and
  gpu / gpu asked, for a GPU shard). The slots are the sum over those nodes; 1 when no node is
  known that could run it (the run then says why no node can).
- **Shards.** A few shards per slot, SHARDS_PER_SLOT (4): enough that a slow or retried shard
  does not leave the other slots idle at the end, few enough that the per-shard cost (a task
  run, bids, a work folder) stays small beside the datums' own work.
- **Batch size.** ceil(datums / (SHARDS_PER_SLOT x slots)), rounded up to the next step of
  1, 2, 5, 10, 20, 50, ... so that adding or removing a few datums keeps the batch size (and
  so the shards and their content keys) as they were, and bounded to 1..MAX_AUTO_BATCH, so a
  shard never holds more than a thousand datums (its request, its staging and a retry stay
  small).

Examples on the embedded network of this 2-core machine (3 nodes, each 2 cpus and a third of
the memory: 20 slots each at the default 0.1 cpu, 60 in all): 100 datums -> 1 (100 shards);
10,000 -> 50 (200 shards); 100,000 -> 500 (200 shards); 10,000,000 -> 1,000 (10,000 shards).

`bflow plan` and `bflow run` count the embedded network's nodes, or with `--network` (and
`run(..., network=...)`) that network's, asked once as `bflow nodes` does (network/census.py);
`plan_pipeline(..., nodes=...)` takes `NodeInfo`s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ..network.messages import Capacity, NodeInfo, ResourceAsk

SHARDS_PER_SLOT = 4
MAX_AUTO_BATCH = 1000
STEPS = (1, 2, 5)  # times a power of ten


@dataclass(frozen=True)
class BatchChoice:
    """What `batch_size: auto` chose, and from what."""

    batch_size: int
    datums: int
    slots: int
    shards: int
    nodes: str  # which nodes it counted: "embedded" or "network"

    def to_json(self) -> dict:
        return {"batch_size": self.batch_size, "datums": self.datums, "slots": self.slots,
                "shards": self.shards, "shards_per_slot": SHARDS_PER_SLOT, "max_batch_size": MAX_AUTO_BATCH,
                "nodes": self.nodes}

    def describe(self) -> str:
        """One line for `bflow plan`."""
        return (f"batch_size auto: {self.batch_size} ({self.datums} datums over {self.slots} slots on the "
                f"{self.nodes} nodes, {SHARDS_PER_SLOT} shards a slot: {self.shards} shards)")


def auto_batch_size(datums: int, slots: int) -> int:
    """The rule above: ceil(datums / (SHARDS_PER_SLOT x slots)), up to the next 1-2-5 step,
    within 1..MAX_AUTO_BATCH."""
    wanted = math.ceil(max(datums, 0) / (SHARDS_PER_SLOT * max(slots, 1)))
    if wanted <= 1:
        return 1
    power = 1
    while True:
        for step in STEPS:
            if step * power >= wanted:
                return min(step * power, MAX_AUTO_BATCH)
        power *= 10


def slots_on(total: Capacity, ask: ResourceAsk) -> int:
    """How many shards asking `ask` a node of capacity `total` runs at once (0: none fits)."""
    if not total.fits(ask):
        return 0
    counts = [math.floor(total.cpu / ask.cpu + 1e-9) if ask.cpu > 0 else None,
              total.memory // ask.memory if ask.memory > 0 else None,
              total.disk // ask.disk if ask.disk > 0 else None,
              total.gpu // ask.gpu if ask.gpu > 0 else None]
    bounded = [c for c in counts if c is not None]
    return max(min(bounded), 1) if bounded else 1


def network_slots(nodes: Iterable[NodeInfo], ask: ResourceAsk, selector: dict[str, str], executor: str) -> int:
    """The slots of the nodes that can run the shard: labels, executor, capacity."""
    return sum(slots_on(n.total, ask) for n in nodes
               if executor in n.executors and all(n.labels.get(k) == v for k, v in selector.items()))


def embedded_slots(ask: ResourceAsk, selector: dict[str, str], nodes: int = 3) -> int:
    """The slots of the embedded network (`bflow run` without --network): `nodes` nodes of
    `network.embedded.embedded_node_capacity`, with no labels."""
    if selector:
        return 0
    from ..network.embedded import embedded_node_capacity

    return nodes * slots_on(embedded_node_capacity(nodes), ask)


def choose(datums: int, pipeline, nodes: list[NodeInfo] | None = None) -> BatchChoice:
    """The batch size for `pipeline`'s `datums` datums on `nodes` (None: the embedded network)."""
    r = pipeline.resources
    ask = ResourceAsk(cpu=r.cpu, memory=r.memory, disk=r.disk, gpu=r.gpu)
    if nodes is None:
        slots, which = embedded_slots(ask, pipeline.selector), "embedded"
    else:
        slots, which = network_slots(nodes, ask, pipeline.selector, pipeline.transform.executor), "network"
    slots = max(slots, 1)
    batch = auto_batch_size(datums, slots)
    return BatchChoice(batch, datums, slots, math.ceil(datums / batch) if datums else 0, which)
