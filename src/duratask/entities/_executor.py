"""Running a batch of operations on one entity: state in; results, new state and actions
out. The shape follows the Durable Task protocol's EntityBatchRequest / EntityBatchResult,
so that the operations of an entity reach user code the same way however they arrived."""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any

from duratask._registry import Registry
from duratask.converter import PayloadCodec
from duratask.entities._context import Entity, EntityAction, EntityContext
from duratask.entities._id import EntityInstanceId
from duratask.errors import EntityNotRegisteredError
from duratask.state import FailureDetails


@dataclass(frozen=True, slots=True)
class OperationRequest:
    """One operation of a batch."""

    operation: str
    request_id: str
    input: str | None = None


@dataclass(frozen=True, slots=True)
class EntityBatchRequest:
    """The operations to run on one entity, in order, on its state."""

    entity_id: str
    state: str | None
    operations: list[OperationRequest]


@dataclass(frozen=True, slots=True)
class OperationResult:
    """What one operation returned (JSON), or how it failed."""

    result: str | None = None
    failure: FailureDetails | None = None


@dataclass(slots=True)
class EntityBatchResult:
    """Per operation a result, in order; the state after the batch; and the actions of the
    operations that succeeded, in order."""

    results: list[OperationResult] = field(default_factory=list)
    state: str | None = None
    actions: list[EntityAction] = field(default_factory=list)


async def run_batch(
    registry: Registry, codec: PayloadCodec, request: EntityBatchRequest
) -> EntityBatchResult:
    """Run every operation of ``request``; a failed one changes nothing and the rest go on."""
    entity_id = EntityInstanceId.parse(request.entity_id)
    target = registry.get_entity(entity_id.name)
    out = EntityBatchResult(state=request.state)
    for op in request.operations:
        ctx = EntityContext(
            entity_id, op.operation, out.state, codec, op.request_id, registry.name_of
        )
        try:
            if target is None:
                raise EntityNotRegisteredError(
                    f"entity {entity_id.name!r} is not registered on this worker "
                    f"(registered entities: {registry.entity_names})"
                )
            value = await _dispatch(target, ctx, op, codec)
            encoded = codec.encode(value, f"result of entity operation {op.operation!r}")
        except Exception as exc:
            out.results.append(OperationResult(failure=FailureDetails.from_exception(exc)))
            continue
        out.state = ctx.serialized_state
        out.actions.extend(ctx.actions)
        out.results.append(OperationResult(result=encoded))
    return out


async def _dispatch(
    target: Any, ctx: EntityContext, op: OperationRequest, codec: PayloadCodec
) -> Any:
    if inspect.isclass(target):
        return await _dispatch_method(target, ctx, op, codec)
    value = target(ctx, codec.decode(op.input))
    if inspect.isawaitable(value):
        value = await value
    return value


async def _dispatch_method(
    cls: type, ctx: EntityContext, op: OperationRequest, codec: PayloadCodec
) -> Any:
    name = op.operation
    method = _operation(cls, name)
    if method is None:
        if name.lower() == "delete":
            ctx.delete_state()
            return None
        raise AttributeError(
            f"entity {ctx.entity_id.name!r} has no operation {name!r} "
            f"(its operations: {sorted(_operations(cls))})"
        )
    obj = cls()
    with contextlib.suppress(AttributeError):  # a class with __slots__ and no context
        obj.context = ctx
    bound = getattr(obj, method)
    params = [
        p
        for p in inspect.signature(bound).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    value = bound(codec.decode(op.input)) if params else bound()
    if inspect.isawaitable(value):
        value = await value
    return value


@functools.lru_cache(maxsize=256)
def _operations(cls: type) -> dict[str, str]:
    """The operations of an entity class: its public methods, by lower-case name."""
    base = set(dir(Entity))
    return {
        name.lower(): name
        for name in dir(cls)
        if not name.startswith("_")
        and name not in base
        and callable(inspect.getattr_static(cls, name, None))
    }


def _operation(cls: type, name: str) -> str | None:
    return _operations(cls).get(name.lower())
