"""The web dashboard and REST management API of a task hub (``pip install 'duratask[dashboard]'``).

:func:`create_app` builds a Starlette application serving server-rendered pages (instance
list, instance details with a timeline of the history, actions behind a confirmation) and a
JSON API under ``/api/`` shaped like Durable Functions' HTTP API, described by
``/openapi.json``. :func:`serve` runs it with uvicorn.
"""

from __future__ import annotations

import importlib.util

# distribution -> the module names it may be imported under (python-multipart renamed its own)
_REQUIRED = {
    "starlette": ("starlette",),
    "uvicorn": ("uvicorn",),
    "jinja2": ("jinja2",),
    "python-multipart": ("python_multipart", "multipart"),
}
_missing = [
    dist
    for dist, modules in _REQUIRED.items()
    if all(importlib.util.find_spec(module) is None for module in modules)
]
if _missing:
    raise ImportError(
        f"the duratask dashboard needs {', '.join(_missing)}, which "
        f"{'is' if len(_missing) == 1 else 'are'} not installed: pip install 'duratask[dashboard]'"
    )

from duratask.dashboard.app import create_app  # noqa: E402
from duratask.dashboard.server import (  # noqa: E402
    DashboardConfigError,
    DashboardServer,
    bind_socket,
    build_server,
    check_bind,
    check_public_url,
    loopback_hosts,
    serve,
)

__all__ = [
    "DashboardConfigError",
    "DashboardServer",
    "bind_socket",
    "build_server",
    "check_bind",
    "check_public_url",
    "create_app",
    "loopback_hosts",
    "serve",
]
