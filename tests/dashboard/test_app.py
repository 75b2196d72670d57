"""The app factory: owned clients across app restarts, and bad settings."""

from __future__ import annotations

import uuid
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duratask.dashboard import create_app
from duratask.dashboard.templating import instance_href

with warnings.catch_warnings():
    # starlette's test client still imports an alias anyio deprecated (anyio.abc.BlockingPortal).
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient


def test_an_app_built_from_a_url_reopens_its_client_when_started_again() -> None:
    app = create_app(f"memory://app-{uuid.uuid4().hex}")
    with TestClient(app) as web:
        started = web.post("/api/orchestrations/echo?instance_id=one", json=1)
        assert started.status_code == 202
        first = app.state.client_source.client
    # Shutting the app down closed the client it made; a second run gets a fresh one.
    with TestClient(app) as web:
        assert web.get("/api/instances/one").json()["runtimeStatus"] == "Pending"
        assert app.state.client_source.client is not first
        page = web.get("/instances")
        assert page.status_code == 200 and ">one</a>" in page.text


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="token must not be empty"):
        create_app("memory://x", token="  ")
    with pytest.raises(ValueError, match="max_body_bytes must be positive"):
        create_app("memory://x", max_body_bytes=0)


_FUZZED = create_app(f"memory://fuzz-{uuid.uuid4().hex}")
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    params=st.dictionaries(
        st.sampled_from(
            ["status", "name", "prefix", "from", "to", "size", "token", "done", "count"]
        ),
        _TEXT,
        max_size=5,
    ),
    instance_id=_TEXT,
    action=st.sampled_from(["", "/actions/terminate", "/actions/raise-event", "/actions/nope"]),
)
def test_pages_answer_odd_input_without_a_server_error(
    params: dict[str, str], instance_id: str, action: str
) -> None:
    web = TestClient(_FUZZED, follow_redirects=False)
    listing = web.get("/instances", params=params)
    assert listing.status_code in (200, 400), listing.text
    detail = web.get(instance_href(instance_id, action))
    assert detail.status_code in (200, 303, 400, 404), detail.text
    jump = web.get("/go", params={"id": instance_id})
    assert jump.status_code == 303
