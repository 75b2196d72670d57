"""``duratask serve``: the Durable Task gRPC sidecar over a duratask task hub.

Microsoft's Durable Task SDKs talk to a backend over one gRPC protocol
(``TaskHubSidecarService``). This package serves it on duratask's stores, so their workers
and clients run on SQLite or PostgreSQL, beside duratask's own. Needs the ``serve`` extra
(``pip install 'duratask[serve]'``).
"""

from duratask.serve.auth import SidecarConfigError
from duratask.serve.server import SidecarServer

__all__ = ["SidecarConfigError", "SidecarServer"]
