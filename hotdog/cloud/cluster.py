"""Lightning's cluster environment for a multi-replica Vertex AI CustomJob.

Vertex AI starts one container per replica and sets ``CLUSTER_SPEC`` in each, a JSON object:

    {"cluster": {"workerpool0": ["HOST:PORT"], "workerpool1": ["HOST:PORT", ...]},
     "environment": "cloud",
     "task": {"type": "workerpool1", "index": 0}}

Worker pool 0 holds exactly one replica (the primary); pool 1 holds the other workers. Each node
(replica) runs ``trainer.devices`` processes, which Lightning launches itself. The node rank is the
replica's place in the list of pools, the primary's address and port are the rendezvous point.
Lightning's own environments read MASTER_ADDR/NODE_RANK-style variables, which Vertex does not
document for custom containers, so this one reads only ``CLUSTER_SPEC``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from lightning.fabric.plugins.environments import LightningEnvironment

from hotdog.core.errors import HotdogError

# Pools 2 and 3 are parameter servers/reduction servers and evaluators: not part of DDP.
TRAINING_POOLS = ("workerpool0", "workerpool1")


class ClusterSpecError(HotdogError):
    """CLUSTER_SPEC is not what Vertex AI sets."""


@dataclass(frozen=True)
class ClusterSpec:
    primary: str  # HOST:PORT of worker pool 0's replica
    node_rank: int
    num_nodes: int

    @classmethod
    def parse(cls, raw: str) -> ClusterSpec:
        try:
            spec = json.loads(raw)
            pools = {name: list(spec["cluster"].get(name, [])) for name in TRAINING_POOLS}
            task_type, index = spec["task"]["type"], int(spec["task"]["index"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ClusterSpecError(
                "CLUSTER_SPEC is not the JSON Vertex AI sets (cluster, task.type, task.index); "
                "unset it outside a Vertex AI job."
            ) from None
        if len(pools["workerpool0"]) != 1:
            raise ClusterSpecError(
                f"CLUSTER_SPEC lists {len(pools['workerpool0'])} primary replicas; worker pool 0 "
                "must have exactly one."
            )
        if task_type not in TRAINING_POOLS or not 0 <= index < len(pools[task_type]):
            raise ClusterSpecError(
                f"This replica ({task_type} {index}) is not a training worker in CLUSTER_SPEC; "
                "use worker pools 0 and 1 for DDP."
            )
        node_rank = index if task_type == "workerpool0" else 1 + index
        return cls(
            primary=pools["workerpool0"][0],
            node_rank=node_rank,
            num_nodes=len(pools["workerpool0"]) + len(pools["workerpool1"]),
        )


class VertexClusterEnvironment(LightningEnvironment):
    """Node rank, node count and the rendezvous address from ``CLUSTER_SPEC``.

    Use it through ``trainer=vertex_ddp``; the job command sets ``trainer.num_nodes`` to the
    replica count, and it is checked against ``CLUSTER_SPEC`` here.
    """

    def __init__(self, num_nodes: int | None = None) -> None:
        super().__init__()
        raw = os.environ.get("CLUSTER_SPEC")
        if raw is None:
            raise ClusterSpecError(
                "trainer=vertex_ddp needs CLUSTER_SPEC, which Vertex AI sets in each replica; "
                "use trainer=ddp outside Vertex AI."
            )
        self.spec = ClusterSpec.parse(raw)
        if num_nodes is not None and num_nodes != self.spec.num_nodes:
            raise ClusterSpecError(
                f"trainer.num_nodes={num_nodes} but CLUSTER_SPEC has {self.spec.num_nodes} "
                "replicas; submit the job with hotdog-vertex, which sets both."
            )

    @staticmethod
    def detect() -> bool:
        return "CLUSTER_SPEC" in os.environ

    @property
    def main_address(self) -> str:
        return self.spec.primary.rsplit(":", 1)[0]

    @property
    def main_port(self) -> int:
        return int(self.spec.primary.rsplit(":", 1)[1])

    def node_rank(self) -> int:
        return self.spec.node_rank
