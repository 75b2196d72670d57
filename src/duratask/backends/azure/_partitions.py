"""Partition leases: which worker serves which ``{hub}-control-NN`` partition.

Each partition has a blob ``{hub}-control-NN`` in the ``{hub}-leases`` container; a worker
owns the partition while it holds that blob's lease (``PARTITION_LEASE`` seconds, renewed
every ``PARTITION_LEASE / 3`` s). Workers make themselves known by a presence row in the
``{hub}Workers`` table (partition key ``partition-members``), rewritten at every balancing
round; a member whose row the table service has not seen written for two rounds is gone.
The live members, sorted, split the partitions among themselves (partition ``n`` goes to
member ``n mod count``), so two or three workers share them evenly: a worker releases the
partitions it should no longer serve and takes the ones it should, once their holder
released them or its lease ran out. Ages are judged by the table service's own timestamps,
never by the workers' clocks.

A SIGKILLed worker renews nothing: its presence goes stale within two rounds and its leases
run out within ``PARTITION_LEASE`` s of its last renewal, then the survivors take its
partitions at their next round (a second apart while a worker misses partitions it should
serve).

Ownership decides who reads which control queue and sweeps which instances; it is not what
keeps an instance to one worker at a time (the sentinel row's ETag-fenced lease does that),
so a moment of two owners during a hand-over costs at most a refused write.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.storage.blob.aio import BlobLeaseClient

from duratask.backends.azure import _codec as codec

_LOG = logging.getLogger("duratask.backends.azure")

PARTITION_LEASE = 15  # seconds (a blob lease lasts 15 to 60 s)
MEMBERS = "partition-members"  # partition key of presence rows in the Workers table
_ROUND = PARTITION_LEASE / 3  # seconds between two balancing rounds
_CATCH_UP = 1.0  # seconds between rounds while partitions this worker should serve are held
_FORGET_AFTER = 3600.0  # seconds after which a silent member's presence row is deleted


def new_member_id() -> str:
    """A worker's name among the partition members: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def assigned(members: Sequence[str], partitions: Sequence[str], member: str) -> set[str]:
    """The partitions ``member`` should serve when ``members`` are alive."""
    ordered = sorted(set(members) | {member})
    me = ordered.index(member)
    return {name for n, name in enumerate(partitions) if n % len(ordered) == me}


class PartitionLeases:
    """One store object's share of the partitions (see the module docstring)."""

    def __init__(self, partitions: Sequence[str], member: str | None = None) -> None:
        self.partitions = list(partitions)
        self.member = member or new_member_id()
        self.lease_id = str(uuid.uuid4())
        self.owned: set[str] = set()
        self._next_round = 0.0

    async def serve(self, container: Any, members_table: Any) -> frozenset[str]:
        """The partitions this worker serves now, after a balancing round when one is due."""
        if time.monotonic() >= self._next_round:
            try:
                await self._balance(container, members_table)
            except Exception as exc:  # a storage outage: keep what is held, try again soon
                _LOG.warning(
                    "partition balancing failed: %s",
                    exc,
                    extra={"event": "duratask.partition.balance_failed"},
                )
                self._next_round = time.monotonic() + _CATCH_UP
        return frozenset(self.owned)

    async def _balance(self, container: Any, members_table: Any) -> None:
        wanted = assigned(await self._live_members(members_table), self.partitions, self.member)
        for name in sorted(self.owned - wanted):
            await self._release(container, name)
        for name in sorted(wanted):
            await self._hold(container, name)
        missing = wanted - self.owned
        self._next_round = time.monotonic() + (_CATCH_UP if missing else _ROUND)

    async def _live_members(self, table: Any) -> list[str]:
        """Write this member's presence row, then read who else wrote theirs lately."""
        key = codec.table_key(self.member)
        await table.upsert_entity(
            {"PartitionKey": MEMBERS, "RowKey": key, "Member": self.member},
            mode=UpdateMode.REPLACE,
        )
        rows = [
            row
            async for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": MEMBERS})
        ]
        stamps: dict[str, datetime] = {
            str(row["Member"]): row.metadata["timestamp"] for row in rows
        }
        now = stamps.get(self.member)
        if now is None:
            return [self.member]
        live = []
        for member, at in stamps.items():
            age = (now - at).total_seconds()
            if age <= 2 * _ROUND:
                live.append(member)
            elif age > _FORGET_AFTER:  # a worker that died long ago: drop its row
                await _forget(table, member)
        return live

    async def _hold(self, container: Any, name: str) -> None:
        """Take or renew the lease of partition ``name``; it is not held if another worker's
        lease on it is live."""
        blob = container.get_blob_client(name)
        for _ in range(3):
            try:
                await blob.acquire_lease(lease_duration=PARTITION_LEASE, lease_id=self.lease_id)
            except ResourceNotFoundError as exc:
                await _create(container, blob, exc)
                continue
            except ResourceExistsError:
                self._lost(name)
                return
            except HttpResponseError as exc:
                if exc.status_code == 409:
                    self._lost(name)
                    return
                raise
            if name not in self.owned:
                await blob.set_blob_metadata({"owner": self.member}, lease=self.lease_id)
                self.owned.add(name)
                _LOG.info(
                    "partition %s taken by %s",
                    name,
                    self.member,
                    extra={"event": "duratask.partition.taken", "partition": name},
                )
            return

    def _lost(self, name: str) -> None:
        if name in self.owned:
            self.owned.discard(name)
            _LOG.warning(
                "partition %s lost by %s",
                name,
                self.member,
                extra={"event": "duratask.partition.lost", "partition": name},
            )

    async def _release(self, container: Any, name: str) -> None:
        self.owned.discard(name)
        try:
            await BlobLeaseClient(container.get_blob_client(name), self.lease_id).release()
        except HttpResponseError as exc:  # taken over meanwhile, or gone: not ours anyway
            _LOG.debug("partition %s not released: %s", name, exc)
        else:
            _LOG.info(
                "partition %s released by %s",
                name,
                self.member,
                extra={"event": "duratask.partition.released", "partition": name},
            )

    async def release_all(self, container: Any, members_table: Any) -> None:
        """Hand every partition over and leave the members (a clean shutdown)."""
        for name in sorted(self.owned):
            await self._release(container, name)
        self._next_round = 0.0
        await _forget(members_table, self.member)


async def _forget(table: Any, member: str) -> None:
    """Delete a member's presence row."""
    try:
        await table.delete_entity(MEMBERS, codec.table_key(member))
    except HttpResponseError as exc:
        _LOG.debug("presence of %s not deleted: %s", member, exc)


async def _create(container: Any, blob: Any, missing: ResourceNotFoundError) -> None:
    """Create the lease blob (and its container, for a hub made before partition leases)."""
    if "container" in str(getattr(missing, "error_code", "") or "").lower():
        try:
            await container.create_container()
        except ResourceExistsError:
            pass
    try:
        await blob.upload_blob(b"", overwrite=False)
    except ResourceExistsError:
        pass
    except ResourceNotFoundError:
        try:
            await container.create_container()
        except ResourceExistsError:
            pass


async def partition_owners(container: Any, partitions: Sequence[str]) -> dict[str, str | None]:
    """Who holds each partition's lease now (``None``: nobody)."""
    owners: dict[str, str | None] = dict.fromkeys(partitions)
    try:
        async for blob in container.list_blobs(include=["metadata"]):
            if blob.name in owners and blob.lease.state == "leased":
                owners[blob.name] = (blob.metadata or {}).get("owner")
    except ResourceNotFoundError:
        pass
    return owners
