"""What crosses the transport between a requester and a compute node: plain JSON.

A node never receives code, only a declarative `ShardRequest` (ARCHITECTURE.md
decision 1), and answers with a `ShardResult` that names its outputs and logs by CID.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class InputRef(BaseModel):
    name: str
    url: str


class TransformRef(BaseModel):
    executor: str = "local"
    cmd: list[str] = Field(default_factory=list)
    image: str | None = None
    module: str | None = None
    entrypoint: str = "_start"
    fuel: int | None = None
    stdin: str | None = None
    env: dict[str, str] = Field(default_factory=dict)


class ResourceAsk(BaseModel):
    cpu: float = 0.1
    memory: int = 256 * 2**20
    disk: int = 2**30
    gpu: int = 0


class ShardRequest(BaseModel):
    job_id: str
    pipeline: str
    shard_index: int
    shard_id: str
    shard_count: int
    attempt: int = 1
    transform: TransformRef
    inputs: list[InputRef]
    datums: list[dict[str, list[str]]]
    resources: ResourceAsk = Field(default_factory=ResourceAsk)
    network: Literal["none", "full"] = "none"
    timeout: float | None = None
    # Gateways (base URLs) that hold the blocks of the shard's ipfs:// inputs: the requester's,
    # then the nodes'. Set on networks reached by URL, where local inputs travel as ipfs://.
    providers: list[str] = Field(default_factory=list)

    @property
    def attempt_id(self) -> str:
        return f"{self.job_id}/{self.shard_index}/{self.attempt}"

    def ipfs_roots(self) -> list[str]:
        """The root CIDs of its ipfs:// inputs (without their paths)."""
        return [ref.url[len("ipfs://"):].split("/", 1)[0] for ref in self.inputs if ref.url.startswith("ipfs://")]


ShardState = Literal["completed", "failed", "cancelled"]


class ShardResult(BaseModel):
    job_id: str
    shard_index: int
    shard_id: str
    attempt: int
    node: str
    state: ShardState
    exit_code: int | None = None
    error: str | None = None
    retryable: bool = False  # the failure was the node's, not the command's
    outputs_cid: str | None = None
    stdout_cid: str | None = None
    stderr_cid: str | None = None
    started: float | None = None
    ended: float | None = None


class Capacity(BaseModel):
    cpu: float
    memory: int
    disk: int
    gpu: int = 0

    def fits(self, ask: ResourceAsk) -> bool:
        return (
            ask.cpu <= self.cpu + 1e-9
            and ask.memory <= self.memory
            and ask.disk <= self.disk
            and ask.gpu <= self.gpu
        )


class NodeInfo(BaseModel):
    id: str
    version: str
    executors: list[str]
    labels: dict[str, str] = Field(default_factory=dict)
    total: Capacity
    free: Capacity
    running: int = 0
    queued: int = 0
    gateway: str | None = None  # the URL of the node's IPFS trustless gateway, when it serves one
    address: str | None = None  # the host other machines reach the node by (`bflow node --advertise`)
    public_key: str | None = None  # its ed25519 key (urlsafe base64): secrets are sealed to it
    unavailable: dict[str, str] = Field(default_factory=dict)  # executor -> why this node cannot offer it
