"""What an entity operation may do: read and write its state, signal entities, start
orchestrations."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from duratask.converter import PayloadCodec
from duratask.entities._id import EntityInstanceId

_UUID_NAMESPACE = uuid.UUID("0b7c1e55-3f2a-4c65-9d5e-6a1f0c8e2b47")


@dataclass(frozen=True, slots=True)
class SignalAction:
    """An operation sent on to an entity (one-way) by an entity operation."""

    entity_id: str
    operation: str
    request_id: str
    input: str | None = None
    signal_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class StartOrchestrationAction:
    """An orchestration an entity operation starts."""

    instance_id: str
    name: str
    version: str | None = None
    input: str | None = None


EntityAction = SignalAction | StartOrchestrationAction


class EntityContext:
    """What one entity operation sees and may do.

    The state is JSON between operations: :meth:`get_state` decodes it, :meth:`set_state`
    encodes a new one, :meth:`delete_state` removes it (an entity with no state is not listed).
    If the operation raises, its state change, signals and starts are all dropped.

    Attributes:
        entity_id: The entity running the operation.
        operation_name: The operation asked for (as the caller spelled it).
    """

    def __init__(
        self,
        entity_id: EntityInstanceId,
        operation_name: str,
        state: str | None,
        codec: PayloadCodec,
        request_id: str,
        entity_names: Callable[[Any], str],
    ) -> None:
        self.entity_id = entity_id
        self.operation_name = operation_name
        self._state = state
        self._codec = codec
        self._request_id = request_id
        self._name_of = entity_names
        self._actions: list[EntityAction] = []

    @property
    def has_state(self) -> bool:
        """Whether the entity has a state."""
        return self._state is not None

    def get_state(self, state_type: Any = None, default: Any = None) -> Any:
        """The state decoded (as ``state_type`` if given), or ``default`` if there is none."""
        if self._state is None:
            return default
        return self._codec.decode(self._state, state_type)

    def set_state(self, value: Any) -> None:
        """Replace the state with ``value`` (JSON-serialisable; None deletes it)."""
        self._state = self._codec.encode(value, f"state of entity {str(self.entity_id)!r}")
        if self._state == "null":
            self._state = None

    def delete_state(self) -> None:
        """Remove the state: the entity ceases to exist once its operations are done."""
        self._state = None

    def signal_entity(
        self,
        entity_id: EntityInstanceId | str,
        operation: str,
        input: Any = None,
        *,
        signal_time: datetime | None = None,
    ) -> None:
        """Send ``operation`` to an entity, one-way (no later than ``signal_time`` if given,
        an aware datetime); sent only if this operation succeeds."""
        target = EntityInstanceId.of(entity_id)
        if signal_time is not None and signal_time.tzinfo is None:
            raise ValueError("signal_time must be a timezone-aware datetime")
        encoded = self._codec.encode(input, f"input of entity operation {operation!r}")
        self._actions.append(
            SignalAction(str(target), operation, self._next_id(), encoded, signal_time)
        )

    def start_orchestration(
        self,
        orchestrator: Any,
        *,
        input: Any = None,
        instance_id: str | None = None,
        version: str | None = None,
    ) -> str:
        """Start an orchestration (by function or registered name) if this operation
        succeeds; returns its instance id (derived from the operation when not given, so
        a retried batch starts the same instance, once)."""
        name = self._name_of(orchestrator)
        encoded = self._codec.encode(input, f"input of orchestration {name!r}")
        started = instance_id or uuid.UUID(self._next_id()).hex
        self._actions.append(StartOrchestrationAction(started, name, version, encoded))
        return started

    # -- executor side -------------------------------------------------------------------------
    @property
    def serialized_state(self) -> str | None:
        """The state as JSON text, as the operation has left it so far."""
        return self._state

    @property
    def actions(self) -> list[EntityAction]:
        """The signals and starts the operation asked for so far."""
        return self._actions

    def _next_id(self) -> str:
        seed = f"{self._request_id}|{len(self._actions)}"
        return str(uuid.uuid5(_UUID_NAMESPACE, seed))


class Entity:
    """Base class of class-based entities (optional): its public methods are operations,
    taking the operation's input if they declare a parameter for it; ``self.context`` is the
    operation's :class:`EntityContext` and ``self.state`` its decoded state.

    A fresh object runs each operation: keep what must last in the state. If the class
    defines no ``delete`` method, the ``delete`` operation deletes the state.

    Attributes:
        context: The context of the operation running.
        state_type: What :attr:`state` decodes the state as (plain JSON values by default).
        default_state: The state of an entity that has none yet (a copy of it).
    """

    context: EntityContext
    state_type: Any = None
    default_state: Any = None

    @property
    def state(self) -> Any:
        """The entity's state (``default_state`` if it has none)."""
        if not self.context.has_state:
            return copy.deepcopy(self.default_state)
        return self.context.get_state(self.state_type)

    @state.setter
    def state(self, value: Any) -> None:
        self.context.set_state(value)
