"""The PostgreSQL task hub store (``postgresql://user@host:port/db?schema=NAME``).

Needs the ``postgres`` extra: ``pip install 'duratask[postgres]'`` (psycopg 3 and
psycopg-pool).
"""

try:
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        f"the PostgreSQL store needs {exc.name!r}: install duratask[postgres] "
        "(pip install 'duratask[postgres]')",
        name=exc.name,
    ) from exc

from duratask.backends.postgres._store import PostgresOrchestrationService

__all__ = ["PostgresOrchestrationService"]
