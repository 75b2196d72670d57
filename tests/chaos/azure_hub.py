"""The chaos tests' task hub on Azure Storage (Azurite), read through Microsoft's table
client to check what the public API does not show.

The rows are those the store's docstring describes (``duratask.backends.azure._store``): in
``{hub}History`` each instance's partition holds a ``sentinel`` row (its instance row, the
current history's id ``Hist`` and length, the instance lease's ``Token``, a ``Staged`` mark
while a large episode is being applied), history rows ``h-HIST-SEQ`` and work rows: inbox
messages ``m-``, activities ``a-``, outbox ``o-``. ``{hub}Entities`` partitions hold an
``entity`` row (with its lease's ``Token``) and the same kinds of work rows.
``{hub}Instances`` holds a copy of each instance row for queries, which may be stale after a
crash (queries re-read the sentinel of an instance whose copy says it is unfinished), so
stale copies are counted, not failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .. import azurite
from .hubs import TERMINAL, Target

WORK_ROWS = {"m-": "messages", "a-": "activities", "o-": "outbox"}


def _prefix_filter(prefixes: list[str]) -> str:
    """A filter for row keys that start with any of ``prefixes`` (each ``x-``)."""
    return " or ".join(f"(RowKey ge '{p}' and RowKey lt '{p[0]}.')" for p in prefixes)


def instance_id(partition_key: str) -> str:
    """The instance id a partition key stands for (keys percent-encode a few characters)."""
    return unquote(partition_key)


@dataclass
class AzureHub(Target):
    """A fresh hub on the session's Azurite."""

    hub: str = ""
    connection_string: str = ""
    # A killed worker's control partitions wait for its blob leases to run out (15 s, the
    # least a blob lease lasts) before a survivor serves them: kills every 0.5-2 s would
    # leave most partitions unserved most of the time, and the run would crawl.
    kill_interval: tuple[float, float] = (3.0, 6.0)

    def rows(self, table: str, query: str | None = None) -> list[dict[str, Any]]:
        """The rows of ``{hub}{table}`` that ``query`` selects (all without one)."""
        # Imported here: without the azure extra the Azure legs skip rather than break
        # the collection of every chaos test.
        from azure.data.tables import TableServiceClient

        with TableServiceClient.from_connection_string(self.connection_string) as service:
            client = service.get_table_client(f"{self.hub}{table}")
            rows = client.query_entities(query) if query else client.list_entities()
            return [dict(row) for row in rows]

    def _sentinels(self) -> dict[str, dict[str, Any]]:
        rows = self.rows("History", "RowKey eq 'sentinel'")
        return {instance_id(row["PartitionKey"]): row for row in rows}

    def leftovers(self) -> dict[str, list[Any]]:
        left: dict[str, list[Any]] = {kind: [] for kind in WORK_ROWS.values()}
        for table in ("History", "Entities"):
            for row in self.rows(table, _prefix_filter(list(WORK_ROWS))):
                kind = WORK_ROWS[row["RowKey"][:2]]
                left[kind].append((table, instance_id(row["PartitionKey"]), row["RowKey"]))
        sentinels = self._sentinels().items()
        left["leases"] = [iid for iid, row in sentinels if row.get("Token")]
        left["staged"] = [iid for iid, row in sentinels if row.get("Staged")]
        entities = self.rows("Entities", "RowKey eq 'entity'")
        left["entity_leases"] = [unquote(row["PartitionKey"]) for row in entities if row["Token"]]
        return left

    def instance_ids(self) -> set[str]:
        return set(self._sentinels())

    def _statuses(self) -> dict[str, str]:
        """Each instance's status, from its sentinel (the truth, not the copy)."""
        statuses = {}
        for iid, row in self._sentinels().items():
            assert not row["State"].startswith("@blob:"), f"{iid}: instance row in a blob"
            statuses[iid] = json.loads(row["State"])["status"]
        return statuses

    def finished_count(self) -> int:
        return sum(status in TERMINAL for status in self._statuses().values())

    def _history_rows(self) -> Iterator[tuple[str, str, int]]:
        """(instance id, history id, sequence number) of every stored history row."""
        for row in self.rows("History", _prefix_filter(["h-"])):
            history, sequence = row["RowKey"][2:].rsplit("-", 1)
            yield instance_id(row["PartitionKey"]), history, int(sequence)

    def sequence_numbers(self) -> dict[str, list[int]]:
        """The sequence numbers of each instance's current history (rows of another one are
        :meth:`storage_problems`)."""
        current = {iid: row["Hist"] for iid, row in self._sentinels().items()}
        numbers: dict[str, list[int]] = {}
        for iid, history, sequence in self._history_rows():
            if current.get(iid) == history:
                numbers.setdefault(iid, []).append(sequence)
        return {iid: sorted(found) for iid, found in numbers.items()}

    def storage_problems(self) -> list[str]:
        sentinels = self._sentinels()
        problems = []
        for iid, history, sequence in self._history_rows():
            if iid not in sentinels or sentinels[iid]["Hist"] != history:
                problems.append(f"{iid}: history row {history}-{sequence} of no current history")
        numbers = self.sequence_numbers()
        for iid, row in sentinels.items():
            if int(row["Length"]) != len(numbers.get(iid, [])):
                problems.append(f"{iid}: sentinel length {row['Length']}, rows differ")
        return problems

    def figures(self) -> dict[str, Any]:
        """How many ``{hub}Instances`` copies are stale or missing (allowed after a crash)."""
        statuses = self._statuses()
        copies = {instance_id(r["PartitionKey"]): r["Status"] for r in self.rows("Instances")}
        return {
            "stale_instance_copies": sum(
                copies[iid] != status for iid, status in statuses.items() if iid in copies
            ),
            "missing_instance_copies": len(set(statuses) - set(copies)),
        }


def new_azure_hub(kind: str) -> AzureHub:
    """A fresh hub on the session's Azurite (skipped, or failed in CI, without one)."""
    emulator = azurite.require_azurite()
    hub = azurite.new_hub()
    url = emulator.url(hub)
    return AzureHub(kind, url, url, hub=hub, connection_string=emulator.connection_string())
