"""The client an app talks to: given by the caller, or opened by the app from a store URL."""

from __future__ import annotations

from duratask.client import AsyncTaskHubClient


class ClientSource:
    """Hands out the app's client.

    A client passed in is used as is and left for its owner to close. For a store URL the
    app makes its own client on first use and closes it when the app shuts down; a later
    request (an app may be started again) gets a fresh one.
    """

    def __init__(self, client: AsyncTaskHubClient | str) -> None:
        self._url = client if isinstance(client, str) else None
        self._client = None if isinstance(client, str) else client

    @property
    def client(self) -> AsyncTaskHubClient:
        if self._client is None:
            assert self._url is not None
            self._client = AsyncTaskHubClient(self._url)
        return self._client

    async def close(self) -> None:
        """Close the client if the app made it."""
        if self._url is not None and self._client is not None:
            client, self._client = self._client, None
            await client.close()
