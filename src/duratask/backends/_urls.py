"""Store URLs, read with a URL parser: which store kind, and for SQLite which file and
options. Anything malformed is refused with :class:`InvalidStoreUrlError` showing the
right form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict
from urllib.parse import parse_qsl, unquote, urlsplit

from duratask.errors import InvalidStoreUrlError

SQLITE_FORMS = (
    "sqlite:///relative/path.db (three slashes: relative to the current directory) or "
    "sqlite:////absolute/path.db (four slashes: an absolute path)"
)
POSTGRES_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB?schema=NAME"
KNOWN_FORMS = (
    "memory://NAME, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    f"{POSTGRES_FORM} or azure://ACCOUNT/HUB"
)
# SQLite URL parameters, each an argument of SqliteOrchestrationService.
SQLITE_PARAMETERS = ("synchronous", "busy_timeout")
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SqliteOptions(TypedDict, total=False):
    """Store options a ``sqlite:`` URL's query may give."""

    synchronous: str
    busy_timeout: float


@dataclass(frozen=True, slots=True)
class SqliteTarget:
    """The file a ``sqlite:`` URL names, and the store options its query gives."""

    path: str
    options: SqliteOptions = field(default_factory=lambda: SqliteOptions())


def scheme(url: str) -> str:
    """The store kind a URL names: ``memory``, ``sqlite``, ``postgresql`` or ``azure``;
    refused if none of those."""
    try:
        kind = urlsplit(url).scheme.lower()
    except ValueError as exc:  # an unclosed IPv6 bracket, say; the URL may hold a password
        raise InvalidStoreUrlError(f"malformed store URL ({exc}): expected {KNOWN_FORMS}") from None
    if kind == "postgres":
        kind = "postgresql"
    if kind not in ("memory", "sqlite", "postgresql", "azure"):
        raise InvalidStoreUrlError(f"unsupported store URL {url!r}: expected {KNOWN_FORMS}")
    if kind in ("memory", "postgresql") and not url.split(":", 1)[1].startswith("//"):
        # Without them, libpq reads a PostgreSQL URL as key=value text, and a memory URL's
        # path would become part of its name.
        right = POSTGRES_FORM if kind == "postgresql" else "memory://NAME"
        raise InvalidStoreUrlError(
            f"a {kind} store URL has two slashes after the scheme: use {right}"
        )
    return kind


def memory_name(url: str) -> str:
    """The name of the in-process hub a ``memory://`` URL names (``default`` if none)."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise InvalidStoreUrlError(
            f"store URL {url!r}: a memory:// URL takes no parameters (use memory://NAME)"
        )
    return parts.netloc + parts.path or "default"


def parse_sqlite_url(url: str) -> SqliteTarget:
    """The file and options of a ``sqlite:`` URL.

    ``sqlite:///hub.db`` is ``hub.db`` in the current directory, ``sqlite:////var/hub.db`` is
    ``/var/hub.db`` (as SQLAlchemy reads them). The path is percent-decoded (``%20`` is a
    space, ``%3F`` a ``?``). The query may set ``synchronous`` and ``busy_timeout``.
    """
    if "\x00" in url:
        raise InvalidStoreUrlError(
            f"store URL {url!r} contains a NUL character, which no file name can hold"
        )
    parts = urlsplit(url)
    after_scheme = url[len(parts.scheme) + 1 :]
    if not after_scheme.startswith("//"):
        raise InvalidStoreUrlError(
            f"malformed SQLite store URL {url!r}: use {SQLITE_FORMS}{_suggest(after_scheme)}"
        )
    if parts.netloc:
        raise InvalidStoreUrlError(
            f"malformed SQLite store URL {url!r}: {parts.netloc!r} stands where a host would, "
            f"and a SQLite URL has none: use {SQLITE_FORMS}{_suggest(after_scheme[2:])}"
        )
    if parts.fragment:
        raise InvalidStoreUrlError(
            f"SQLite store URL {url!r} has a fragment (#{parts.fragment}); write a '#' in a "
            "file name as %23"
        )
    path = unquote(parts.path[1:])  # the slash that ends the (empty) host is not the path's
    if "\x00" in path:
        raise InvalidStoreUrlError(
            f"store URL {url!r} contains a NUL character (%00), which no file name can hold"
        )
    if not path or path.endswith("/"):
        raise InvalidStoreUrlError(f"store URL {url!r} names no file: use {SQLITE_FORMS}")
    if path == ":memory:" or path.startswith("file:"):
        raise InvalidStoreUrlError(
            f"store URL {url!r}: a task hub is shared by connections and processes, which an "
            "in-memory or URI-named SQLite database is not; use memory://NAME for a hub in "
            f"this process, or a file: {SQLITE_FORMS}"
        )
    return SqliteTarget(path, _sqlite_options(url, parts.query))


def _sqlite_options(url: str, query: str) -> SqliteOptions:
    options = SqliteOptions()
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidStoreUrlError(f"store URL {url!r}: malformed query {query!r}") from None
    for key, value in pairs:
        if key not in SQLITE_PARAMETERS:
            raise InvalidStoreUrlError(
                f"SQLite store URL {url!r}: unknown parameter {key!r} (known: "
                f"{', '.join(SQLITE_PARAMETERS)}); write a '?' in a file name as %3F"
            )
        if key in options:
            raise InvalidStoreUrlError(f"SQLite store URL {url!r} gives {key!r} twice")
        if key == "busy_timeout":
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < float("inf"):
                raise InvalidStoreUrlError(
                    f"SQLite store URL {url!r}: busy_timeout must be a number of seconds "
                    f"(e.g. busy_timeout=10), not {value!r}"
                )
            options["busy_timeout"] = seconds
        elif value.upper() in SYNCHRONOUS_LEVELS:
            options["synchronous"] = value.upper()
        else:
            raise InvalidStoreUrlError(
                f"SQLite store URL {url!r}: synchronous must be one of "
                f"{', '.join(SYNCHRONOUS_LEVELS)}, not {value!r}"
            )
    return options


def _suggest(path: str) -> str:
    """The two well-formed URLs for what was probably meant by ``path``."""
    path = path.lstrip("/")
    if not path or "?" in path or "#" in path:
        return ""
    return f"; for {path!r} here write sqlite:///{path}, for '/{path}' write sqlite:////{path}"
