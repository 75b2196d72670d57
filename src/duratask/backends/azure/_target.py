"""``azure://`` store URLs: which storage account, which credential, which task hub.

Three forms:

- ``azure://ACCOUNT/HUB``: the account's public endpoints
  (``https://ACCOUNT.{blob,queue,table}.core.windows.net``), signed in with
  ``DefaultAzureCredential`` (needs the ``azure-identity`` package);
- ``azure:///HUB?connection_string=...``: any account (or emulator) a connection string
  names, percent-encoded in the query;
- ``azure://devstoreaccount1/HUB?host=127.0.0.1&blob_port=10000&queue_port=10001&table_port=10002``:
  the Azurite emulator with its well-known development key (the host and ports shown are
  the defaults).

Every form may add ``partitions=N`` (1 to 16, default 4): how many control queues the
hub's instances are spread over. A hub's name is 3 to 45 letters and digits, starting with
a letter (it prefixes table, queue and container names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from duratask.errors import InvalidStoreUrlError

AZURE_FORMS = (
    "azure://ACCOUNT/HUB (DefaultAzureCredential), azure:///HUB?connection_string=... "
    "or azure://devstoreaccount1/HUB?blob_port=P&queue_port=P&table_port=P (Azurite)"
)
EMULATOR_ACCOUNT = "devstoreaccount1"
# The emulator's published development key (not a secret: every Azurite has it).
EMULATOR_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEFAULT_PARTITIONS = 4
MAX_PARTITIONS = 16
_HUB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,44}")
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_PARAMETERS = ("connection_string", "partitions", "host", "blob_port", "queue_port", "table_port")


@dataclass(frozen=True, slots=True)
class AzureTarget:
    """Where an ``azure://`` URL points.

    Attributes:
        hub: The task hub's name.
        account: The storage account's name (for people and hub identity).
        connection_string: How to connect, when the URL gives one (or for the emulator).
        partitions: How many control queues the hub uses.
    """

    hub: str
    account: str
    connection_string: str | None
    partitions: int = DEFAULT_PARTITIONS

    def endpoint(self, service: str) -> str:
        """The account URL of ``service`` (blob, queue or table) when signing in with a
        credential rather than a connection string."""
        return f"https://{self.account}.{service}.core.windows.net"


def emulator_connection_string(host: str, blob: int, queue: int, table: int) -> str:
    """The connection string of an Azurite listening on ``host`` at these ports."""
    base = f"http://{host}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={EMULATOR_ACCOUNT};AccountKey={EMULATOR_KEY};"
        f"BlobEndpoint={base}:{blob}/{EMULATOR_ACCOUNT};"
        f"QueueEndpoint={base}:{queue}/{EMULATOR_ACCOUNT};"
        f"TableEndpoint={base}:{table}/{EMULATOR_ACCOUNT};"
    )


def parse_azure_url(url: str) -> AzureTarget:
    """The account, credential and hub of an ``azure://`` URL; :class:`InvalidStoreUrlError`
    naming the problem and the right forms otherwise."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "azure":
        raise InvalidStoreUrlError(f"store URL {url!r} is not an azure:// URL: use {AZURE_FORMS}")
    if parts.fragment:
        raise InvalidStoreUrlError(f"Azure store URL {url!r} has a fragment: use {AZURE_FORMS}")
    params = _parameters(url, parts.query)
    hub = unquote(parts.path.strip("/"))
    if not _HUB_NAME.fullmatch(hub):
        raise InvalidStoreUrlError(
            f"Azure store URL {url!r}: the task hub name {hub!r} must be 3 to 45 letters and "
            f"digits starting with a letter; use {AZURE_FORMS}"
        )
    partitions = _partitions(url, params.pop("partitions", None))
    account = parts.netloc.lower()
    connection = params.pop("connection_string", None)
    if connection is not None:
        if account:
            raise InvalidStoreUrlError(
                f"Azure store URL {url!r} names an account and a connection string; give one"
            )
        if params:
            raise InvalidStoreUrlError(
                f"Azure store URL {url!r}: {', '.join(sorted(params))} cannot go with a "
                "connection string"
            )
        return AzureTarget(hub, _account_of(url, connection), connection, partitions)
    if not account:
        raise InvalidStoreUrlError(
            f"Azure store URL {url!r} names no storage account: use {AZURE_FORMS}"
        )
    if account == EMULATOR_ACCOUNT:
        host = params.pop("host", "127.0.0.1")
        ports = [
            _port(url, name, params.pop(name, default))
            for name, default in (
                ("blob_port", "10000"),
                ("queue_port", "10001"),
                ("table_port", "10002"),
            )
        ]
        return AzureTarget(
            hub, account, emulator_connection_string(host, *ports), partitions=partitions
        )
    if params:
        raise InvalidStoreUrlError(
            f"Azure store URL {url!r}: {', '.join(sorted(params))} only go with the "
            f"emulator account {EMULATOR_ACCOUNT}"
        )
    if not _ACCOUNT_NAME.fullmatch(account):
        raise InvalidStoreUrlError(
            f"Azure store URL {url!r}: {account!r} is not a storage account name (3 to 24 "
            "lower-case letters and digits)"
        )
    return AzureTarget(hub, account, None, partitions)


def _parameters(url: str, query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidStoreUrlError(f"Azure store URL {url!r}: malformed query {query!r}") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in _PARAMETERS:
            raise InvalidStoreUrlError(
                f"Azure store URL {url!r}: unknown parameter {key!r} (known: "
                f"{', '.join(_PARAMETERS)})"
            )
        if key in params:
            raise InvalidStoreUrlError(f"Azure store URL {url!r} gives {key!r} twice")
        params[key] = value
    return params


def _partitions(url: str, value: str | None) -> int:
    if value is None:
        return DEFAULT_PARTITIONS
    if not value.isdigit() or not 1 <= int(value) <= MAX_PARTITIONS:
        raise InvalidStoreUrlError(
            f"Azure store URL {url!r}: partitions must be a whole number from 1 to "
            f"{MAX_PARTITIONS}, not {value!r}"
        )
    return int(value)


def _port(url: str, name: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise InvalidStoreUrlError(f"Azure store URL {url!r}: {name} must be a port, not {value!r}")
    return int(value)


def _account_of(url: str, connection: str) -> str:
    fields = dict(
        part.split("=", 1) for part in connection.split(";") if "=" in part and part.strip()
    )
    account = fields.get("AccountName")
    if not account:
        raise InvalidStoreUrlError(
            f"Azure store URL {url!r}: the connection string names no AccountName"
        )
    return account
