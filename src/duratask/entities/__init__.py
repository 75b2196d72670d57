"""Durable entities: small stateful objects whose operations run one at a time.

An entity is named ``@name@key`` (:class:`EntityInstanceId`). Register an entity on a worker
with :meth:`~duratask.TaskHubWorker.add_entity`: a function ``(ctx, input)`` dispatching on
``ctx.operation_name``, or a class whose public methods are its operations (see
:class:`Entity`). Orchestrations signal, call and lock entities through their context;
clients signal, read, query and clean them.
"""

from duratask.entities._context import Entity, EntityContext
from duratask.entities._id import EntityInstanceId

__all__ = ["Entity", "EntityContext", "EntityInstanceId"]
