"""Durable entities: not kept by the Azure store yet."""

from __future__ import annotations

from datetime import datetime, timedelta

from duratask.backends.azure._core import StoreCore
from duratask.backends.azure._rows import _ENTITIES_UNSUPPORTED
from duratask.backends.base import (
    CleanEntityStorageResult,
    EntityCommit,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    EntityWorkItem,
    WorkFilter,
)
from duratask.errors import FeatureNotSupportedError


class EntityStore(StoreCore):
    """Durable entities."""

    async def lock_next_entity_work_item(
        self,
        owner: str,
        lease: timedelta,
        max_messages: int = 100,
        work_filter: WorkFilter | None = None,
    ) -> EntityWorkItem | None:
        """Never any: this store keeps no entities."""
        return None

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def send_entity_message(self, message: EntityMessage) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        """Never any: this store keeps no entities."""
        return None

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        """Always empty: this store keeps no entities."""
        return EntityQueryPage()

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Nothing to clean: this store keeps no entities."""
        return CleanEntityStorageResult()
