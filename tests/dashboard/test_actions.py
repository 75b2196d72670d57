"""Actions through the pages (confirmation, CSRF), read-only mode and token login."""

from __future__ import annotations

import html
import re
from urllib.parse import quote

import httpx

import duratask as dt
from duratask.dashboard.security import CSRF_COOKIE, SESSION_COOKIE
from tests.dashboard import workflows
from tests.dashboard.conftest import JSON, Hub, csrf_token, form_post

S = dt.OrchestrationStatus


def action_page(instance_id: str, action: str) -> str:
    return f"/instances/{quote(instance_id, safe='')}/actions/{action}"


async def test_raise_event_through_the_confirmation_form(hub: Hub, web: httpx.AsyncClient) -> None:
    iid = await hub.start_instance(workflows.wait_event)
    confirm = await web.get(action_page(iid, "raise-event"))
    assert confirm.status_code == 200
    assert 'name="event_name"' in confirm.text and 'name="event_data"' in confirm.text
    assert "Raise an external event?" in confirm.text

    bad = await form_post(
        web, action_page(iid, "raise-event"), {"event_name": "go", "event_data": "{oops"}
    )
    assert bad.status_code == 400
    assert "not valid JSON" in bad.text and "{oops" in bad.text  # the entry is kept
    assert await hub.status(iid) in (S.PENDING, S.RUNNING)

    done = await form_post(
        web, action_page(iid, "raise-event"), {"event_name": "go", "event_data": '{"x": [1, 2]}'}
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/instances/{iid}?done=raise-event"
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
    assert state.output == {"x": [1, 2]}
    shown = await web.get(done.headers["location"])
    assert "Event sent." in shown.text


async def test_terminate_with_a_reason(hub: Hub, web: httpx.AsyncClient) -> None:
    iid = await hub.start_instance(workflows.wait_event)
    await hub.client.wait_for_orchestration_start(iid)
    done = await form_post(web, action_page(iid, "terminate"), {"reason": "no longer needed"})
    assert done.status_code == 303
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
    assert state.runtime_status is S.TERMINATED and state.output == "no longer needed"
    # Terminating again is refused: the instance is gone already.
    again = await form_post(web, action_page(iid, "terminate"), {"reason": ""})
    assert again.status_code == 410 and "already finished" in again.text


async def test_suspend_then_resume(hub: Hub, web: httpx.AsyncClient) -> None:
    iid = await hub.start_instance(workflows.wait_event)
    await hub.client.wait_for_orchestration_start(iid)
    assert (
        await form_post(web, action_page(iid, "suspend"), {"reason": "pause"})
    ).status_code == 303
    await hub.wait_status(iid, S.SUSPENDED)
    page = (await web.get(f"/instances/{iid}")).text
    assert re.findall(r'data-action="([a-z-]+)"', page) == [
        "raise-event",
        "resume",
        "restart",
        "terminate",
    ]
    assert (await form_post(web, action_page(iid, "resume"), {"reason": ""})).status_code == 303
    await hub.wait_status(iid, S.RUNNING)
    await hub.client.raise_orchestration_event(iid, "go", "on")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
    assert state.output == "on"
    types = [e.event_type for e in await hub.client.get_orchestration_history(iid)]
    assert dt.EventType.EXECUTION_SUSPENDED in types and dt.EventType.EXECUTION_RESUMED in types


async def test_rewind_a_failed_instance(hub: Hub, web: httpx.AsyncClient) -> None:
    failed = await hub.finish(workflows.flaky_flow, f"key-{id(web)}")
    assert failed.runtime_status is S.FAILED
    page = (await web.get(f"/instances/{failed.instance_id}")).text
    assert "rewind" in re.findall(r'data-action="([a-z-]+)"', page)
    done = await form_post(web, action_page(failed.instance_id, "rewind"), {"reason": "fixed"})
    assert done.status_code == 303
    await hub.wait_status(failed.instance_id, S.COMPLETED)
    state = await hub.client.get_orchestration_state(failed.instance_id)
    assert state is not None and state.output == f"recovered key-{id(web)}"
    # A completed instance cannot be rewound.
    refused = await form_post(web, action_page(failed.instance_id, "rewind"), {"reason": ""})
    assert refused.status_code == 409 and "only FAILED instances" in html.unescape(refused.text)


async def test_restart_under_the_same_or_a_new_id(hub: Hub, web: httpx.AsyncClient) -> None:
    first = await hub.finish(workflows.echo, {"n": 5}, instance_id="restart-me")
    same = await form_post(web, action_page("restart-me", "restart"), {})
    assert same.headers["location"] == "/instances/restart-me?done=restart"

    async def rerun() -> bool:
        state = await hub.client.get_orchestration_state("restart-me")
        return (
            state is not None
            and state.execution_id != first.execution_id
            and state.runtime_status is S.COMPLETED
        )

    from tests.conformance.e2e_hub import wait_until

    await wait_until(rerun, what="the restarted run to complete")

    fresh = await form_post(web, action_page("restart-me", "restart"), {"new_instance_id": "on"})
    new_id = fresh.headers["location"].split("/instances/")[1].split("?")[0]
    assert new_id != "restart-me"
    state = await hub.client.wait_for_orchestration_completion(new_id, timeout=20)
    assert state.output == {"n": 5}

    running = await hub.start_instance(workflows.wait_event)
    await hub.client.wait_for_orchestration_start(running)
    refused = await form_post(web, action_page(running, "restart"), {})
    assert refused.status_code == 409 and "terminate it first" in refused.text


async def test_purge(hub: Hub, web: httpx.AsyncClient) -> None:
    done = await hub.finish(workflows.echo, 1)
    purged = await form_post(web, action_page(done.instance_id, "purge"), {})
    assert purged.headers["location"] == "/instances?done=purge&count=1"
    assert await hub.client.get_orchestration_state(done.instance_id) is None
    assert "1 instance(s) deleted." in (await web.get(purged.headers["location"])).text

    running = await hub.start_instance(workflows.wait_event)
    refused = await form_post(web, action_page(running, "purge"), {})
    assert refused.status_code == 409 and await hub.status(running) is not None

    gone = await web.get(action_page(done.instance_id, "purge"))
    assert gone.status_code == 404
    unknown = await web.get(action_page(running, "explode"))
    assert unknown.status_code == 404


# -- CSRF --------------------------------------------------------------------------------


async def test_forms_without_the_csrf_token_are_refused(hub: Hub, web: httpx.AsyncClient) -> None:
    iid = await hub.start_instance(workflows.wait_event)
    page = await web.get(action_page(iid, "terminate"))
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{CSRF_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = csrf_token(page.text)

    missing = await web.post(action_page(iid, "terminate"), data={"reason": "x"})
    wrong = await web.post(action_page(iid, "terminate"), data={"csrf_token": token[::-1]})
    # Another browser (no cookie) replaying a token seen in this one:
    stranger = hub.web()
    replayed = await stranger.post(action_page(iid, "terminate"), data={"csrf_token": token})
    for response in (missing, wrong, replayed):
        assert response.status_code == 403
        assert "security token" in response.text
    assert await hub.status(iid) in (S.PENDING, S.RUNNING)


async def test_every_page_form_route_checks_csrf(hub: Hub, web: httpx.AsyncClient) -> None:
    from starlette.routing import Route

    app = web._transport.app  # type: ignore[attr-defined]
    form_routes = [
        r.path
        for r in app.routes
        if isinstance(r, Route) and "POST" in (r.methods or ()) and not r.path.startswith("/api")
    ]
    assert set(form_routes) == {
        "/instances/{instance_id:path}/actions/{action}",
        "/instances/bulk",
        "/instances/bulk/{action}",
        "/schedules/{schedule_id:path}/actions/{action}",
        "/login",
        "/logout",
    }
    await web.get("/instances")  # a session cookie, but no token in the forms below
    for path in form_routes:
        url = path.replace("{instance_id:path}", "x").replace("{schedule_id:path}", "x")
        url = url.replace("{action}", "terminate")
        response = await web.post(url, data={"reason": "x"})
        assert response.status_code == 403, path


# -- read-only -----------------------------------------------------------------------------


async def test_read_only_hides_and_refuses_actions(hub: Hub) -> None:
    web = hub.web(read_only=True)
    iid = await hub.start_instance(workflows.wait_event)
    await hub.client.wait_for_orchestration_start(iid)
    page = await web.get(f"/instances/{iid}")
    assert page.status_code == 200
    assert "data-action=" not in page.text and "read-only" in page.text
    assert (await web.get(action_page(iid, "terminate"))).status_code == 403
    await web.get("/instances")
    posted = await web.post(
        action_page(iid, "terminate"), data={"csrf_token": web.cookies[CSRF_COOKIE]}
    )
    assert posted.status_code == 403
    api = await web.post(f"/api/instances/{iid}/terminate", headers=JSON)
    assert api.status_code == 403 and api.json()["error"]["type"] == "read_only"
    start = await web.post("/api/orchestrations/echo", json=1)
    assert start.status_code == 403
    assert (await web.get(f"/api/instances/{iid}")).status_code == 202
    assert await hub.status(iid) is S.RUNNING
    document = (await web.get("/openapi.json")).json()
    assert "403" in document["paths"]["/api/instances/{instance_id}/terminate"]["post"]["responses"]


# -- token ---------------------------------------------------------------------------------


async def test_token_guards_pages_through_a_login(hub: Hub) -> None:
    web = hub.web(token="s3cret-token")
    redirect = await web.get("/instances?status=RUNNING")
    assert redirect.status_code == 303
    assert redirect.headers["location"] == "/login?next=%2Finstances%3Fstatus%3DRUNNING"
    login = await web.get(redirect.headers["location"])
    assert login.status_code == 200 and 'name="token"' in login.text
    token_field = csrf_token(login.text)

    wrong = await web.post(
        "/login", data={"csrf_token": token_field, "token": "guess", "next": "/instances"}
    )
    assert wrong.status_code == 401 and "not the dashboard's token" in html.unescape(wrong.text)
    assert SESSION_COOKIE not in web.cookies

    right = await web.post(
        "/login",
        data={
            "csrf_token": token_field,
            "token": "s3cret-token",
            "next": "/instances?status=RUNNING",
        },
    )
    assert right.status_code == 303 and right.headers["location"] == "/instances?status=RUNNING"
    session = web.cookies[SESSION_COOKIE]
    assert "s3cret-token" not in session
    assert (await web.get("/instances")).status_code == 200
    assert (await web.get("/api/counts")).status_code == 200  # the session works for the API too

    out = await web.post("/logout", data={"csrf_token": token_field})
    assert out.status_code == 303
    assert (await web.get("/instances")).status_code == 303

    # Never sent to another site after logging in.
    page = await web.get("/login")
    evil = await web.post(
        "/login",
        data={
            "csrf_token": csrf_token(page.text),
            "token": "s3cret-token",
            "next": "//evil.example",
        },
    )
    assert evil.headers["location"] == "/"


async def test_token_guards_the_api_with_a_bearer_header(hub: Hub) -> None:
    web = hub.web(token="s3cret-token")
    anonymous = await web.get("/api/instances")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "unauthorized"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = await web.get("/api/instances", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    auth = {"Authorization": "Bearer s3cret-token"}
    started = await web.post("/api/orchestrations/echo", json={"v": 1}, headers=auth)
    assert started.status_code == 202
    state = await hub.client.wait_for_orchestration_completion(started.json()["id"], timeout=20)
    assert state.output == {"v": 1}
    assert (await web.get("/api/instances", headers=auth)).status_code == 200
    # The OpenAPI document stays readable, and says a bearer token is needed.
    document = (await web.get("/openapi.json")).json()
    assert document["security"] == [{"bearer": []}]


async def test_requests_for_other_hosts_are_refused(hub: Hub) -> None:
    web = hub.web(allowed_hosts=["127.0.0.1", "localhost"])
    assert (await web.get("/instances")).status_code == 400
    assert (await web.get("/api/counts")).json()["error"]["type"] == "bad_host"
    local = await web.get("/api/counts", headers={"Host": "localhost:8233"})
    assert local.status_code == 200
