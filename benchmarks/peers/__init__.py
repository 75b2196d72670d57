"""Other durable-execution libraries run on the same workloads (``--compare``).

Each peer runs in two configurations, both measured in the same run as duratask: its
defaults, and the fastest configuration found for it (``-best``). Ratios in the report are
taken against the best one. A peer's package is optional and imported only by its own
module, inside a trial's process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.hubs import HubPlace
    from benchmarks.measure import Progress


@dataclass(frozen=True, slots=True)
class Peer:
    name: str  # as given to --compare
    module: str  # the peer's own package
    workloads_module: str  # ours: the workloads written for it, with run(...)
    requirement: str  # what pip installs when the module is missing
    distribution: str  # whose version is recorded
    title: str  # for the report's header
    stores: tuple[str, ...]  # the stores it can run on (its own kind of each)
    workloads: tuple[str, ...]
    best: str  # system name of the fastest configuration
    default: str  # system name of the default configuration

    @property
    def systems(self) -> tuple[str, str]:
        return (self.best, self.default)


PEERS: dict[str, Peer] = {
    "dbos": Peer(
        name="dbos",
        module="dbos",
        workloads_module="benchmarks.peers.dbos_workloads",
        requirement="dbos>=3,<4",
        distribution="dbos",
        title="DBOS Transact",
        stores=("sqlite", "postgresql"),
        workloads=("W1", "W2", "W3", "W4", "W5"),
        best="dbos-best",
        default="dbos-default",
    ),
    "durabletask-sdk": Peer(
        name="durabletask-sdk",
        module="durabletask",
        workloads_module="benchmarks.peers.durabletask_sdk_workloads",
        requirement="durabletask>=1.12,<2",
        distribution="durabletask",
        title="Microsoft durabletask (Python SDK) on its in-memory test backend",
        stores=("memory",),
        workloads=("W1", "W2", "W3", "W4", "W5"),
        best="dtsdk-best",
        default="dtsdk-default",
    ),
    "durabletask-sdk-serve": Peer(
        name="durabletask-sdk-serve",
        module="durabletask",
        workloads_module="benchmarks.peers.durabletask_sdk_workloads",
        requirement="durabletask>=1.12,<2",
        distribution="durabletask",
        title="Microsoft durabletask (Python SDK) through duratask serve",
        stores=("sqlite", "postgresql"),
        # W5 measures the trial process's memory, and the server is a process of its own.
        workloads=("W1", "W2", "W3", "W4"),
        best="dtsdk-serve-best",
        default="dtsdk-serve-default",
    ),
}


def peer_of(system: str) -> Peer:
    for peer in PEERS.values():
        if system in peer.systems:
            return peer
    raise KeyError(f"no peer runs as {system!r}")


def run_peer(
    system: str, workload: str, place: HubPlace, params: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """Run one trial of a peer system (in the trial's own process)."""
    import importlib

    workloads = importlib.import_module(peer_of(system).workloads_module)
    metrics: dict[str, Any] = workloads.run(system, workload, place, params, progress)
    return metrics
