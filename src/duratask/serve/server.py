"""The gRPC server: every ``TaskHubSidecarService`` RPC, over one task hub store.

Errors become gRPC status codes with a message; an RPC the server cannot serve yet answers
UNIMPLEMENTED saying so, never hangs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from google.protobuf import empty_pb2

from duratask.backends import TaskHubStore, open_store
from duratask.errors import (
    InvalidOperationError,
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    OrchestrationNotFoundError,
    OrchestrationWaitTimeoutError,
    StoreError,
)
from duratask.serve.auth import authorized, check_bind
from duratask.serve.client_rpcs import ClientRpcs, raw_client
from duratask.serve.protocol import ProtocolError
from duratask.serve.work_items import UnknownTokenError, WorkItemStreams, owner_prefix

_LOG = logging.getLogger("duratask.serve")
R = TypeVar("R")
Ctx = grpc.aio.ServicerContext[Any, Any]

_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (OrchestrationNotFoundError, grpc.StatusCode.NOT_FOUND),
    (UnknownTokenError, grpc.StatusCode.NOT_FOUND),
    (OrchestrationAlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (InvalidOperationError, grpc.StatusCode.FAILED_PRECONDITION),
    (LeaseLostError, grpc.StatusCode.FAILED_PRECONDITION),
    (OrchestrationWaitTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (StoreError, grpc.StatusCode.UNAVAILABLE),
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
    (TypeError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status an error of an RPC answers with."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _rpc(
    fn: Callable[[Sidecar, Any, Ctx], Awaitable[R]],
) -> Callable[[Sidecar, Any, Ctx], Awaitable[R]]:
    """A unary RPC: check the caller's token, turn errors into status codes."""

    @functools.wraps(fn)
    async def handler(self: Sidecar, request: Any, context: Ctx) -> R:
        if self.token is not None:  # without one, every caller is let in: nothing to read
            await self._authorize(context)
        try:
            return await fn(self, request, context)
        except Exception as exc:
            code = status_code(exc)
            if code is grpc.StatusCode.INTERNAL:
                _LOG.exception(
                    "%s failed",
                    fn.__name__,
                    extra={"event": "duratask.serve.rpc_error", "rpc": fn.__name__},
                )
            await context.abort(code, f"{type(exc).__name__}: {exc}")
            raise  # unreachable: abort raises

    return handler


class Sidecar:
    """The ``TaskHubSidecarService`` servicer over one store."""

    def __init__(
        self,
        store: TaskHubStore,
        *,
        port: int,
        token: str | None = None,
        max_deliveries: int = 10,
    ) -> None:
        self.store = store
        self.token = token
        self.client = raw_client(store)
        self.streams = WorkItemStreams(
            store, owner_prefix=owner_prefix(port), max_deliveries=max_deliveries
        )
        self.rpcs = ClientRpcs(self.client, self.streams.start_eagerly)

    async def _authorize(self, context: Ctx) -> None:
        if not authorized(context.invocation_metadata(), self.token):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this server needs a token: send 'authorization: Bearer <token>' metadata",
            )

    async def _unimplemented(self, context: Ctx, what: str) -> Any:
        await self._authorize(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, what)

    # -- health and the hub ----------------------------------------------------------------

    @_rpc
    async def Hello(self, request: Any, context: Ctx) -> Any:
        return empty_pb2.Empty()

    @_rpc
    async def CreateTaskHub(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.create_hub(request)

    @_rpc
    async def DeleteTaskHub(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.delete_hub(request)

    # -- lifecycle -------------------------------------------------------------------------

    @_rpc
    async def StartInstance(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.start(request)

    @_rpc
    async def GetInstance(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.get(request)

    @_rpc
    async def WaitForInstanceStart(self, request: Any, context: Ctx) -> Any:
        remaining = context.time_remaining()
        return await self.rpcs.wait(request, completion=False, seconds=remaining)

    @_rpc
    async def WaitForInstanceCompletion(self, request: Any, context: Ctx) -> Any:
        remaining = context.time_remaining()
        return await self.rpcs.wait(request, completion=True, seconds=remaining)

    @_rpc
    async def RaiseEvent(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.raise_event(request)

    @_rpc
    async def TerminateInstance(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.terminate(request)

    @_rpc
    async def SuspendInstance(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.suspend(request)

    @_rpc
    async def ResumeInstance(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.resume(request)

    @_rpc
    async def RewindInstance(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.rewind(request)

    @_rpc
    async def RestartInstance(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.restart(request)

    @_rpc
    async def QueryInstances(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.query(request)

    @_rpc
    async def ListInstanceIds(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.list_ids(request)

    @_rpc
    async def PurgeInstances(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.purge(request)

    async def StreamInstanceHistory(self, request: Any, context: Ctx) -> AsyncIterator[Any]:
        await self._authorize(context)
        try:
            chunks = await self.rpcs.history(request)
        except Exception as exc:
            await context.abort(status_code(exc), f"{type(exc).__name__}: {exc}")
        for chunk in chunks:
            yield chunk

    async def SkipGracefulOrchestrationTerminations(self, request: Any, context: Ctx) -> Any:
        return await self._unimplemented(
            context, "SkipGracefulOrchestrationTerminations is not supported by duratask serve"
        )

    # -- workers ---------------------------------------------------------------------------

    async def GetWorkItems(self, request: Any, context: Ctx) -> AsyncIterator[Any]:
        await self._authorize(context)
        async for item in self.streams.serve(request):
            yield item

    @_rpc
    async def CompleteOrchestratorTask(self, request: Any, context: Ctx) -> Any:
        await self.streams.complete_orchestration(request)
        return pb.CompleteTaskResponse()

    @_rpc
    async def CompleteActivityTask(self, request: Any, context: Ctx) -> Any:
        await self.streams.complete_activity(request)
        return pb.CompleteTaskResponse()

    @_rpc
    async def AbandonTaskOrchestratorWorkItem(self, request: Any, context: Ctx) -> Any:
        await self.streams.abandon(request.completionToken)
        return pb.AbandonOrchestrationTaskResponse()

    @_rpc
    async def AbandonTaskActivityWorkItem(self, request: Any, context: Ctx) -> Any:
        await self.streams.abandon(request.completionToken)
        return pb.AbandonActivityTaskResponse()

    @_rpc
    async def CompleteEntityTask(self, request: Any, context: Ctx) -> Any:
        await self.streams.complete_entity(request)
        return pb.CompleteTaskResponse()

    @_rpc
    async def AbandonTaskEntityWorkItem(self, request: Any, context: Ctx) -> Any:
        await self.streams.abandon(request.completionToken)
        return pb.AbandonEntityTaskResponse()

    # -- entities --------------------------------------------------------------------------

    @_rpc
    async def SignalEntity(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.signal_entity(request)

    @_rpc
    async def GetEntity(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.get_entity(request)

    @_rpc
    async def QueryEntities(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.query_entities(request)

    @_rpc
    async def CleanEntityStorage(self, request: Any, context: Ctx) -> Any:
        return await self.rpcs.clean_entity_storage(request)


class SidecarServer:
    """``duratask serve``: the Durable Task sidecar protocol over a duratask task hub, so
    Microsoft's Durable Task SDKs (Python, JavaScript, .NET, Java, Go) run on SQLite or
    PostgreSQL.

    ``store`` is a store URL or object. Listens on loopback unless given a ``token``
    (which clients send as ``authorization: Bearer <token>`` metadata); ``tls`` is a
    (private key, certificate chain) PEM pair. Port 0 picks a free port (see :attr:`port`).
    Work handed to SDK workers ``max_deliveries`` times without completing (each time
    their process died or hung) is given up as duratask's own workers give it up: the
    activity's task, or the instance, fails with ``PoisonWorkError``.
    """

    def __init__(
        self,
        store: str | TaskHubStore,
        *,
        host: str = "localhost",
        port: int = 4001,
        token: str | None = None,
        tls: tuple[bytes, bytes] | None = None,
        max_deliveries: int = 10,
    ) -> None:
        check_bind(host, token)
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._max_deliveries = max_deliveries
        self._store = open_store(store)
        self._owns_store = isinstance(store, str)
        self._host = host
        self._requested_port = port
        self._token = token
        self._tls = tls
        self._server: grpc.aio.Server | None = None
        self._sidecar: Sidecar | None = None
        self.port = port

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (the port known once started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Open the store (creating the hub if missing), listen, and take over the leases a
        previous server on this address held."""
        await self._store.open()
        server = grpc.aio.server()
        host = f"[{self._host}]" if ":" in self._host else self._host
        address = f"{host}:{self._requested_port}"
        if self._tls is not None:
            credentials = grpc.ssl_server_credentials([self._tls])
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        sidecar = Sidecar(
            self._store, port=self.port, token=self._token, max_deliveries=self._max_deliveries
        )
        pb_grpc.add_TaskHubSidecarServiceServicer_to_server(sidecar, server)  # type: ignore[no-untyped-call]
        await server.start()
        self._server, self._sidecar = server, sidecar
        taken = await sidecar.streams.take_over_predecessor()
        if taken:
            _LOG.info(
                "took over %d lease(s) of the previous server on %s",
                taken,
                self.address,
                extra={"event": "duratask.serve.leases_taken_over", "leases": taken},
            )

    async def wait(self) -> None:
        """Serve until stopped."""
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop listening (workers' unfinished items are handed back) and close the store."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._sidecar is not None:
            await self._sidecar.streams.close()
            self._sidecar = None
        if self._owns_store:
            await self._store.close()

    async def __aenter__(self) -> SidecarServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = ["Sidecar", "SidecarServer", "status_code"]
