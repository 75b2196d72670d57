"""The client RPCs of the sidecar: starting, reading, signalling, querying and purging
instances, through duratask's client and the store seam.

Payloads arrive as JSON text and are stored as they are (a pass-through converter), so an
instance reads the same from an SDK, from duratask's client, its CLI and its dashboard.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from google.protobuf import wrappers_pb2

from duratask.backends.base import TERMINAL_STATUSES, EntityMetadata, OrchestrationMessage
from duratask.client import MAX_QUERY_PAGE_SIZE, AsyncTaskHubClient, build_start_message
from duratask.converter import PayloadCodec
from duratask.errors import OrchestrationNotFoundError, SerializationError
from duratask.history import ExecutionStarted
from duratask.serve.protocol import (
    events_to_pb,
    optional_text,
    optional_time,
    state_to_pb,
    status_from_pb,
    text,
    timestamp,
    trace_from_pb,
)
from duratask.state import OrchestrationState, OrchestrationStatus

HISTORY_CHUNK = 200  # events per HistoryChunk of StreamInstanceHistory
_TAGS_KEPT = 10_000  # executions whose tags are remembered
_LONGEST_WAIT = timedelta(days=1)


class RawJson:
    """A converter for payloads that are JSON text already: stored as given (after a check
    that they are JSON), read back as text."""

    def serialize(self, value: Any) -> str | None:
        """``value`` itself: JSON text or None."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise SerializationError(f"expected JSON text, got {type(value).__qualname__}")
        try:
            json.loads(value)
        except ValueError as exc:
            raise SerializationError(f"payload is not JSON text: {exc}") from exc
        return value

    def deserialize(self, text: str | None, type_hint: Any = None) -> Any:
        """The stored text, unchanged."""
        return text


def raw_client(store: Any) -> AsyncTaskHubClient:
    """A client over ``store`` whose payloads are JSON text in and out."""
    return AsyncTaskHubClient(store, data_converter=RawJson())


def _entity_to_pb(entity: EntityMetadata) -> pb.EntityMetadata:
    return pb.EntityMetadata(
        instanceId=entity.entity_id,
        lastModifiedTime=timestamp(entity.last_modified_at),
        backlogQueueSize=entity.backlog,
        lockedBy=text(entity.locked_by),
        serializedState=text(entity.serialized_state),
    )


# Creates an instance, leasing it to a worker that can run it now when there is one; False
# when it created nothing (no worker could take it).
StartEagerly = Callable[[OrchestrationMessage, frozenset[OrchestrationStatus]], Awaitable[bool]]


class ClientRpcs:
    """The client half of the protocol, over one client; ``start_eagerly`` (the worker
    streams') hands a new instance's first episode to a connected worker at once."""

    def __init__(
        self, client: AsyncTaskHubClient, start_eagerly: StartEagerly | None = None
    ) -> None:
        self.client = client
        self._codec = PayloadCodec(RawJson())
        self._start_eagerly = start_eagerly
        # The tags of the executions this server started lately (an execution's tags never
        # change), so that answering a wait on one needs no history read.
        self._started_tags: OrderedDict[tuple[str, str | None], dict[str, str] | None] = (
            OrderedDict()
        )

    async def _tags(self, state: OrchestrationState) -> dict[str, str] | None:
        """The tags of the instance's execution (its start's): remembered from the start
        this server made, else read from the history."""
        key = (state.instance_id, state.execution_id)
        if key in self._started_tags:
            return self._started_tags[key]
        history = await self.client.store.get_history(state.instance_id)
        start = next((e for e in history if isinstance(e, ExecutionStarted)), None)
        return start.tags if start is not None else None

    def _remember_tags(self, start: ExecutionStarted) -> None:
        self._started_tags[(start.instance_id, start.execution_id)] = start.tags
        if len(self._started_tags) > _TAGS_KEPT:
            self._started_tags.popitem(last=False)

    async def _state(self, state: OrchestrationState | None, payloads: bool) -> Any:
        if state is None:
            return pb.GetInstanceResponse(exists=False)
        tags = await self._tags(state)
        return pb.GetInstanceResponse(
            exists=True, orchestrationState=state_to_pb(state, payloads=payloads, tags=tags)
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, request: pb.CreateInstanceRequest) -> pb.CreateInstanceResponse:
        """StartInstance: scheduled start, reuse policy, version, tags, trace context."""
        message = build_start_message(
            self._codec,
            datetime.now(UTC),
            request.name,
            input=optional_text(request, "input"),
            instance_id=request.instanceId or None,
            start_at=optional_time(request, "scheduledStartTimestamp"),
            version=optional_text(request, "version"),
            tags=dict(request.tags) or None,
        )
        trace = trace_from_pb(request, "parentTraceContext")
        if trace is not None:
            event = message.event
            assert isinstance(event, ExecutionStarted)
            message = replace(message, event=replace(event, trace_context=trace))
        if request.HasField("orchestrationIdReusePolicy"):
            replaceable = frozenset(
                status_from_pb(s) for s in request.orchestrationIdReusePolicy.replaceableStatus
            )
        else:
            replaceable = TERMINAL_STATUSES
        if self._start_eagerly is None or not await self._start_eagerly(message, replaceable):
            await self.client.store.create_instance(message, replaceable=replaceable)
        assert isinstance(message.event, ExecutionStarted)
        self._remember_tags(message.event)
        return pb.CreateInstanceResponse(instanceId=message.instance_id)

    async def get(self, request: pb.GetInstanceRequest) -> pb.GetInstanceResponse:
        """GetInstance."""
        state = await self.client.get_orchestration_state(request.instanceId)
        return await self._state(state, request.getInputsAndOutputs)  # type: ignore[no-any-return]

    async def wait(
        self, request: pb.GetInstanceRequest, *, completion: bool, seconds: float | None
    ) -> pb.GetInstanceResponse:
        """WaitForInstanceStart / WaitForInstanceCompletion, within the call's deadline."""
        timeout = _LONGEST_WAIT.total_seconds() if seconds is None else max(seconds, 0.001)
        try:
            if completion:
                state = await self.client.wait_for_orchestration_completion(
                    request.instanceId, timeout
                )
            else:
                state = await self.client.wait_for_orchestration_start(request.instanceId, timeout)
        except OrchestrationNotFoundError:
            return pb.GetInstanceResponse(exists=False)
        return await self._state(state, request.getInputsAndOutputs)  # type: ignore[no-any-return]

    async def raise_event(self, request: pb.RaiseEventRequest) -> pb.RaiseEventResponse:
        """RaiseEvent."""
        await self.client.raise_orchestration_event(
            request.instanceId, request.name, optional_text(request, "input")
        )
        return pb.RaiseEventResponse()

    async def signal_entity(self, request: pb.SignalEntityRequest) -> pb.SignalEntityResponse:
        """SignalEntity: one operation to an entity, one-way, optionally delayed; the
        SDK's request id makes a retried send apply once."""
        await self.client.signal_entity(
            request.instanceId,
            request.name,
            optional_text(request, "input"),
            signal_time=optional_time(request, "scheduledTime"),
            request_id=request.requestId or None,
        )
        return pb.SignalEntityResponse()

    async def get_entity(self, request: pb.GetEntityRequest) -> pb.GetEntityResponse:
        """GetEntity: an entity's metadata (and state when asked), or ``exists`` false."""
        found = await self.client.get_entity(request.instanceId, include_state=request.includeState)
        if found is None:
            return pb.GetEntityResponse(exists=False)
        return pb.GetEntityResponse(exists=True, entity=_entity_to_pb(found))

    async def query_entities(self, request: pb.QueryEntitiesRequest) -> pb.QueryEntitiesResponse:
        """QueryEntities: by id prefix and modification time, paged by continuation token."""
        query = request.query
        page = await self.client.query_entities(
            entity_id_prefix=optional_text(query, "instanceIdStartsWith"),
            last_modified_from=optional_time(query, "lastModifiedFrom"),
            last_modified_to=optional_time(query, "lastModifiedTo"),
            include_state=query.includeState,
            page_size=min(max(query.pageSize.value or 100, 1), MAX_QUERY_PAGE_SIZE),
            continuation_token=optional_text(query, "continuationToken"),
        )
        return pb.QueryEntitiesResponse(
            entities=[_entity_to_pb(e) for e in page.entities],
            continuationToken=text(page.continuation_token),
        )

    async def clean_entity_storage(
        self, request: pb.CleanEntityStorageRequest
    ) -> pb.CleanEntityStorageResponse:
        """CleanEntityStorage: in one pass, so no continuation token comes back."""
        done = await self.client.clean_entity_storage(
            remove_empty_entities=request.removeEmptyEntities,
            release_orphaned_locks=request.releaseOrphanedLocks,
        )
        return pb.CleanEntityStorageResponse(
            emptyEntitiesRemoved=done.empty_entities_removed,
            orphanedLocksReleased=done.orphaned_locks_released,
        )

    async def terminate(self, request: pb.TerminateRequest) -> pb.TerminateResponse:
        """TerminateInstance (recursive into running sub-orchestrations when asked)."""
        await self.client.terminate_orchestration(
            request.instanceId, output=optional_text(request, "output"), recursive=request.recursive
        )
        return pb.TerminateResponse()

    async def suspend(self, request: pb.SuspendRequest) -> pb.SuspendResponse:
        """SuspendInstance."""
        await self.client.suspend_orchestration(
            request.instanceId, optional_text(request, "reason")
        )
        return pb.SuspendResponse()

    async def resume(self, request: pb.ResumeRequest) -> pb.ResumeResponse:
        """ResumeInstance."""
        await self.client.resume_orchestration(request.instanceId, optional_text(request, "reason"))
        return pb.ResumeResponse()

    async def rewind(self, request: pb.RewindInstanceRequest) -> pb.RewindInstanceResponse:
        """RewindInstance: a FAILED instance runs again from its failed step."""
        await self.client.rewind_orchestration(request.instanceId, optional_text(request, "reason"))
        return pb.RewindInstanceResponse()

    async def restart(self, request: pb.RestartInstanceRequest) -> pb.RestartInstanceResponse:
        """RestartInstance, under the same id or a new one."""
        new_id = await self.client.restart_orchestration(
            request.instanceId, new_instance_id=request.restartWithNewInstanceId
        )
        return pb.RestartInstanceResponse(instanceId=new_id)

    # -- queries -----------------------------------------------------------------------------

    async def query(self, request: pb.QueryInstancesRequest) -> pb.QueryInstancesResponse:
        """QueryInstances: status, created range and id prefix, paged by continuation token."""
        query = request.query
        size = query.maxInstanceCount or 100
        page = await self.client.query_orchestrations(
            statuses=[status_from_pb(s) for s in query.runtimeStatus] or None,
            created_from=optional_time(query, "createdTimeFrom"),
            created_to=optional_time(query, "createdTimeTo"),
            instance_id_prefix=optional_text(query, "instanceIdPrefix") or None,
            page_size=min(max(size, 1), MAX_QUERY_PAGE_SIZE),
            continuation_token=optional_text(query, "continuationToken") or None,
        )
        return pb.QueryInstancesResponse(
            orchestrationState=[
                state_to_pb(s, payloads=query.fetchInputsAndOutputs) for s in page.states
            ],
            continuationToken=text(page.continuation_token),
        )

    async def list_ids(self, request: pb.ListInstanceIdsRequest) -> pb.ListInstanceIdsResponse:
        """ListInstanceIds: ids by status and completion time, paged by the last key."""
        size = min(max(request.pageSize or 100, 1), MAX_QUERY_PAGE_SIZE)
        completed_from = optional_time(request, "completedTimeFrom")
        completed_to = optional_time(request, "completedTimeTo")
        # The ids of finished instances, by default (completion times are what it pages on).
        statuses = [status_from_pb(s) for s in request.runtimeStatus] or TERMINAL_STATUSES
        page = await self.client.query_orchestrations(
            statuses=statuses,
            page_size=size,
            continuation_token=optional_text(request, "lastInstanceKey") or None,
        )
        ids = []
        for state in page.states:
            done = state.completed_at
            if completed_from is not None and (done is None or done < completed_from):
                continue
            if completed_to is not None and (done is None or done >= completed_to):
                continue
            ids.append(state.instance_id)
        return pb.ListInstanceIdsResponse(
            instanceIds=ids, lastInstanceKey=text(page.continuation_token)
        )

    async def history(self, request: pb.StreamInstanceHistoryRequest) -> list[pb.HistoryChunk]:
        """StreamInstanceHistory: the current execution's events, in chunks."""
        events = await self.client.get_orchestration_history(request.instanceId)
        wanted = optional_text(request, "executionId")
        if wanted:
            start = next((e for e in events if isinstance(e, ExecutionStarted)), None)
            if start is not None and start.execution_id != wanted:
                events = []
        converted = events_to_pb(events)
        return [
            pb.HistoryChunk(events=converted[i : i + HISTORY_CHUNK])
            for i in range(0, max(len(converted), 1), HISTORY_CHUNK)
        ]

    # -- purging and the hub ---------------------------------------------------------------

    async def purge(self, request: pb.PurgeInstancesRequest) -> pb.PurgeInstancesResponse:
        """PurgeInstances: one instance (recursively), a batch, or a filter."""
        kind = request.WhichOneof("request")
        deleted = 0
        if kind == "instanceId":
            deleted = await self._purge_one(request.instanceId, request.recursive)
        elif kind == "instanceBatch":
            for instance_id in request.instanceBatch.instanceIds:
                deleted += await self._purge_one(instance_id, request.recursive)
        elif kind == "purgeInstanceFilter":
            wanted = request.purgeInstanceFilter
            asked = [status_from_pb(s) for s in wanted.runtimeStatus]
            terminal = [s for s in asked if s.is_terminal]
            if terminal or not asked:  # only finished instances are ever purged
                deleted = await self.client.purge_orchestrations(
                    created_from=optional_time(wanted, "createdTimeFrom"),
                    created_before=optional_time(wanted, "createdTimeTo"),
                    statuses=terminal or None,
                )
        return pb.PurgeInstancesResponse(
            deletedInstanceCount=deleted, isComplete=wrappers_pb2.BoolValue(value=True)
        )

    async def _purge_one(self, instance_id: str, recursive: bool) -> int:
        if await self.client.get_orchestration_state(instance_id) is None:
            return 0
        return await self.client.purge_orchestration(instance_id, recursive=recursive)

    async def create_hub(self, request: pb.CreateTaskHubRequest) -> pb.CreateTaskHubResponse:
        """CreateTaskHub (``recreateIfExists`` drops everything first)."""
        if request.recreateIfExists:
            await self.client.store.delete_task_hub()
        await self.client.store.create_task_hub()
        return pb.CreateTaskHubResponse()

    async def delete_hub(self, request: pb.DeleteTaskHubRequest) -> pb.DeleteTaskHubResponse:
        """DeleteTaskHub: drops everything the hub stores."""
        await self.client.store.delete_task_hub()
        return pb.DeleteTaskHubResponse()


__all__ = ["HISTORY_CHUNK", "ClientRpcs", "RawJson", "raw_client"]
