"""The server-rendered pages: instance list, instance details, action confirmations, login."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from duratask import history as h
from duratask._waiting import open_items
from duratask.backends import InstanceSort
from duratask.backends.base import EXECUTION_SUMMARY_LENGTH
from duratask.client import AsyncTaskHubClient
from duratask.dashboard import operations
from duratask.dashboard.errors import HttpError, from_exception
from duratask.dashboard.gantt import build_bars, layout
from duratask.dashboard.hub import ClientSource
from duratask.dashboard.security import (
    SESSION_COOKIE,
    Security,
    client_address,
    safe_next,
    too_many_attempts,
)
from duratask.dashboard.templating import Renderer, instance_href
from duratask.dashboard.values import parse_int, parse_json, parse_statuses, parse_time
from duratask.state import OrchestrationState, OrchestrationStatus

PAGE_SIZES = (20, 50, 100, 500)
LIVE_REFRESH_SECONDS = 2
LIST_REFRESH_SECONDS = 5
MAX_CHILDREN = 100
MAX_HISTORY_ROWS = 2000
MAX_EXECUTION_ROWS = 50  # earlier executions listed on an instance's page, latest first
MAX_EXPANDED_ROWS = 100  # list pages up to this long show each row's sub-orchestrations
MAX_INLINE_CHILDREN = 10
MAX_BULK = 500
BULK_ACTIONS = ("terminate", "purge", "rewind")
SORT_COLUMNS = {
    "created": "Created",
    "last_updated": "Last updated",
    "status": "Status",
    "name": "Name",
}
FORM_FIELDS = ("event_name", "event_data", "reason", "new_instance_id")
STATUS_ORDER = (
    OrchestrationStatus.PENDING,
    OrchestrationStatus.RUNNING,
    OrchestrationStatus.SUSPENDED,
    OrchestrationStatus.COMPLETED,
    OrchestrationStatus.FAILED,
    OrchestrationStatus.TERMINATED,
    OrchestrationStatus.CONTINUED_AS_NEW,
)
NOTICES = {
    "raise-event": "Event sent. A worker delivers it when it next runs the instance.",
    "terminate": "Termination requested. A worker ends the instance when it next runs it.",
    "suspend": "Suspension requested.",
    "resume": "Resumption requested.",
    "rewind": "Rewind requested: the instance runs again from its failed step.",
    "restart": "Restarted from the original input.",
    "purge": "Purged.",
}


@dataclass(frozen=True, slots=True)
class Action:
    """One instance action: its button, its confirmation text and when it applies."""

    key: str
    button: str
    question: str
    explanation: str
    applies: Callable[[OrchestrationStatus], bool]
    danger: bool = False


def _live(status: OrchestrationStatus) -> bool:
    return not status.is_terminal


ACTIONS: dict[str, Action] = {
    a.key: a
    for a in (
        Action(
            "raise-event",
            "Raise event…",
            "Raise an external event",
            "The event goes to the instance; an orchestration waiting for an event of this "
            "name receives the data, otherwise it is kept until one does.",
            _live,
        ),
        Action(
            "suspend",
            "Suspend…",
            "Suspend this instance",
            "The instance pauses: what arrives is kept until it is resumed.",
            lambda s: s in (OrchestrationStatus.RUNNING, OrchestrationStatus.PENDING),
        ),
        Action(
            "resume",
            "Resume…",
            "Resume this instance",
            "The instance continues where it paused.",
            lambda s: s is OrchestrationStatus.SUSPENDED,
        ),
        Action(
            "rewind",
            "Rewind…",
            "Rewind this failed instance",
            "The instance runs again from the step that failed; completed work is kept.",
            lambda s: s is OrchestrationStatus.FAILED,
        ),
        Action(
            "restart",
            "Restart…",
            "Restart this instance",
            "A new run starts from the original input. Under the same id, the finished "
            "instance and its history are replaced.",
            lambda s: True,
        ),
        Action(
            "terminate",
            "Terminate…",
            "Terminate this instance",
            "The instance ends as TERMINATED with the reason as its output (its running "
            "sub-orchestrations too). This cannot be undone.",
            _live,
            danger=True,
        ),
        Action(
            "purge",
            "Purge…",
            "Purge this instance",
            "The instance, its history and its finished sub-orchestrations are deleted for good.",
            lambda s: s.is_terminal,
            danger=True,
        ),
    )
}


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    index: int
    offset: str
    timestamp: datetime
    type: str
    event_id: int
    subject: str
    payload: str | None
    marker: bool


def _subject(event: h.HistoryEvent, names: dict[int, str]) -> tuple[str, str | None]:
    """(what the event is about, its payload as JSON text or None)."""
    match event:
        case h.ExecutionStarted():
            return event.name, event.input
        case h.ExecutionCompleted():
            failure = event.failure_details
            if failure is not None:
                return event.status.value, f"{failure.error_type}: {failure.message}"
            return event.status.value, event.result
        case h.TaskScheduled() | h.SubOrchestrationInstanceCreated():
            return event.name, event.input
        case h.TaskCompleted() | h.SubOrchestrationInstanceCompleted():
            return (
                f"{names.get(event.task_scheduled_id, '')} (#{event.task_scheduled_id})",
                event.result,
            )
        case h.TaskFailed() | h.SubOrchestrationInstanceFailed():
            failure = event.failure_details
            subject = f"{names.get(event.task_scheduled_id, '')} (#{event.task_scheduled_id})"
            return subject, f"{failure.error_type}: {failure.message}"
        case h.TimerCreated():
            return f"until {event.fire_at.isoformat()}", None
        case h.TimerFired():
            return f"timer #{event.timer_id}", None
        case h.EventRaised():
            return event.name, event.input
        case h.EventSent():
            return f"{event.name} → {event.instance_id}", event.input
        case h.ExecutionTerminated():
            return "", event.input
        case h.ExecutionSuspended() | h.ExecutionResumed():
            return event.reason or "", None
        case h.ContinueAsNew():
            return "", event.result
    reason = getattr(event, "reason", None)
    return (reason if isinstance(reason, str) else ""), None


def history_rows(events: list[h.HistoryEvent]) -> list[HistoryRow]:
    """The history as table rows, completions named after what they complete."""
    if not events:
        return []
    start = min(e.timestamp for e in events)
    names: dict[int, str] = {}
    rows = []
    for index, event in enumerate(events):
        if isinstance(event, h.TaskScheduled | h.SubOrchestrationInstanceCreated):
            names[event.event_id] = event.name
        elif isinstance(event, h.TimerCreated):
            names[event.event_id] = "timer"
        subject, payload = _subject(event, names)
        rows.append(
            HistoryRow(
                index=index,
                offset=f"+{(event.timestamp - start).total_seconds():.3f}s",
                timestamp=event.timestamp,
                type=type(event).__name__,
                event_id=event.event_id,
                subject=subject,
                payload=payload,
                marker=isinstance(event, h.OrchestratorStarted | h.OrchestratorCompleted),
            )
        )
    return rows


class Pages:
    """The page handlers of one dashboard app."""

    def __init__(self, source: ClientSource, renderer: Renderer, security: Security) -> None:
        self.source = source
        self.renderer = renderer
        self.security = security

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/instances", self.instances, methods=["GET"]),
            Route("/go", self.go, methods=["GET"]),
            Route("/workers", self.workers, methods=["GET"]),
            Route("/entities", self.entities, methods=["GET"]),
            Route("/entities/{entity_id:path}", self.entity, methods=["GET"]),
            Route("/instances/bulk", self.bulk_confirm, methods=["POST"]),
            Route("/instances/bulk/{action}", self.bulk_act, methods=["POST"]),
            Route("/instances/{instance_id:path}/actions/{action}", self.confirm, methods=["GET"]),
            Route("/instances/{instance_id:path}/actions/{action}", self.act, methods=["POST"]),
            Route(
                "/instances/{instance_id:path}/rounds/{generation:int}",
                self.execution_round,
                methods=["GET"],
            ),
            Route("/instances/{instance_id:path}", self.instance, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    def _error(self, request: Request, error: HttpError) -> Response:
        titles = {404: "Not found", 409: "Not possible now", 410: "Already finished"}
        return self.renderer.error(
            request, error.status, titles.get(error.status, "Cannot do that"), error.message
        )

    @property
    def client(self) -> AsyncTaskHubClient:
        return self.source.client

    # -- list ------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return RedirectResponse("/instances", status_code=303)

    async def go(self, request: Request) -> Response:
        target = request.query_params.get("id", "").strip()
        if not target:
            return RedirectResponse("/instances", status_code=303)
        return RedirectResponse(instance_href(target), status_code=303)

    async def instances(self, request: Request) -> Response:
        q = request.query_params
        filters: dict[str, Any] = {
            "status": q.getlist("status"),
            "name": q.get("name", "").strip(),
            "prefix": q.get("prefix", "").strip(),
            "from": q.get("from", "").strip(),
            "to": q.get("to", "").strip(),
            "size": q.get("size", "").strip() or "50",
            "text": q.get("text", "").strip(),
            "subs": "on" if q.get("subs") == "on" else "",
            "sort": q.get("sort", "").strip() or InstanceSort.CREATED.value,
            "dir": "asc" if q.get("dir") == "asc" else "desc",
        }
        context: dict[str, Any] = {
            "filters": filters,
            "page_sizes": PAGE_SIZES,
            "statuses": STATUS_ORDER,
            "sorts": SORT_COLUMNS,
            "states": [],
            "children": {},
            "counts": None,
            "next_token": None,
            "paged": bool(q.get("token")),
            "error": None,
            "notice": NOTICES.get(q.get("done", "")),
            "bulk_notice": q.get("bulk", "") if q.get("bulk", "") in BULK_ACTIONS else None,
            "bulk_count": int(c) if (c := q.get("count", "")).isdigit() else None,
            "purged": int(count) if (count := q.get("count", "")).isdigit() else None,
            "refresh_seconds": LIST_REFRESH_SECONDS,
            "now": datetime.now(UTC),
        }
        status_code = 200
        try:
            statuses = parse_statuses(filters["status"], "status")
            created_from = parse_time(filters["from"], "created from") if filters["from"] else None
            created_to = parse_time(filters["to"], "created to") if filters["to"] else None
            size = parse_int(filters["size"], "page size", minimum=1, maximum=1000)
            common: dict[str, Any] = {
                "name": filters["name"] or None,
                "instance_id_prefix": filters["prefix"] or None,
                "created_from": created_from,
                "created_to": created_to,
                "top_level_only": filters["subs"] != "on",
                "custom_status_contains": filters["text"] or None,
            }
            page = await self.client.query_orchestrations(
                statuses=statuses,
                page_size=size,
                continuation_token=q.get("token") or None,
                sort=filters["sort"],
                descending=filters["dir"] == "desc",
                **common,
            )
            counts = await self.client.count_orchestrations(**common)
            children = await self._children_of(page.states) if filters["subs"] != "on" else {}
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            context["error"] = error.message
            context["refresh_seconds"] = 0
            status_code = error.status
        else:
            context.update(
                states=page.states,
                children=children,
                next_token=page.continuation_token,
                counts=[(s, counts.get(s, 0)) for s in STATUS_ORDER],
                total=sum(counts.values()),
            )
        return self.renderer.render(request, "instances.html", context, status_code)

    async def _children_of(
        self, states: list[OrchestrationState]
    ) -> dict[str, tuple[list[OrchestrationState], bool]]:
        """The first sub-orchestrations of each listed instance (and whether there are more),
        for the rows to expand; skipped for long pages, where it would cost a query a row."""
        if len(states) > MAX_EXPANDED_ROWS:
            return {}
        found: dict[str, tuple[list[OrchestrationState], bool]] = {}
        for state in states:
            page = await self.client.query_orchestrations(
                parent_instance_id=state.instance_id, page_size=MAX_INLINE_CHILDREN
            )
            if page.states:
                found[state.instance_id] = (page.states, page.continuation_token is not None)
        return found

    # -- bulk actions ----------------------------------------------------------------------

    def _selected(self, form: FormData) -> list[str]:
        ids = [v for v in form.getlist("id") if isinstance(v, str) and v]
        return list(dict.fromkeys(ids))[:MAX_BULK]

    async def bulk_confirm(self, request: Request) -> Response:
        """The one confirmation of a bulk action on the instances ticked in the list."""
        if self.security.read_only:
            return self.renderer.error(
                request, 403, "Forbidden", "The dashboard is read-only: actions are switched off."
            )
        form = await request.form()
        key = _field(form, "bulk_action")
        ids = self._selected(form)
        if key not in BULK_ACTIONS or not ids:
            return self.renderer.error(
                request,
                400,
                "Cannot do that",
                "choose an action (terminate, purge or rewind) and tick at least one instance",
            )
        context = {"action": ACTIONS[key], "ids": ids, "max_bulk": MAX_BULK}
        return self.renderer.render(request, "bulk_confirm.html", context)

    async def bulk_act(self, request: Request) -> Response:
        """Apply a confirmed bulk action to each instance; one failure does not stop the rest."""
        if self.security.read_only:
            return self.renderer.error(
                request, 403, "Forbidden", "The dashboard is read-only: actions are switched off."
            )
        form = await request.form()
        key = request.path_params["action"]
        ids = self._selected(form)
        if key not in BULK_ACTIONS or not ids:
            return self.renderer.error(request, 400, "Cannot do that", "nothing to do")
        reason = _field(form, "reason").strip() or None
        done, failed = 0, []
        for instance_id in ids:
            try:
                match key:
                    case "terminate":
                        await operations.terminate(self.client, instance_id, reason)
                    case "rewind":
                        await operations.rewind(self.client, instance_id, reason)
                    case "purge":
                        await operations.purge(self.client, instance_id)
            except Exception as exc:
                error = from_exception(exc)
                if error is None:
                    raise
                failed.append((instance_id, error.message))
            else:
                done += 1
        if failed:
            context = {"action": ACTIONS[key], "done": done, "failed": failed}
            return self.renderer.render(request, "bulk_result.html", context, 207)
        return RedirectResponse(f"/instances?bulk={key}&count={done}", status_code=303)

    # -- workers ---------------------------------------------------------------------------

    async def workers(self, request: Request) -> Response:
        """The workers connected to the hub and the work waiting for them."""
        include_quiet = request.query_params.get("all") == "1"
        try:
            workers = await self.client.list_workers(connected_only=not include_quiet)
            backlog = await self.client.backlog()
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._error(request, error)
        context = {
            "workers": workers,
            "backlog": backlog,
            "include_quiet": include_quiet,
            "now": datetime.now(UTC),
            "refresh_seconds": LIST_REFRESH_SECONDS,
        }
        return self.renderer.render(request, "workers.html", context)

    # -- entities ---------------------------------------------------------------------------

    async def entities(self, request: Request) -> Response:
        q = request.query_params
        filters: dict[str, Any] = {
            "name": q.get("name", "").strip(),
            "prefix": q.get("prefix", "").strip(),
            "from": q.get("from", "").strip(),
            "to": q.get("to", "").strip(),
            "size": q.get("size", "").strip() or "50",
        }
        context: dict[str, Any] = {
            "filters": filters,
            "page_sizes": PAGE_SIZES,
            "entities": [],
            "next_token": None,
            "paged": bool(q.get("token")),
            "error": None,
            "refresh_seconds": LIST_REFRESH_SECONDS,
        }
        status_code = 200
        try:
            page = await self.client.query_entities(
                name=filters["name"] or None,
                entity_id_prefix=filters["prefix"] or None,
                last_modified_from=parse_time(filters["from"], "changed from")
                if filters["from"]
                else None,
                last_modified_to=parse_time(filters["to"], "changed before")
                if filters["to"]
                else None,
                include_state=False,
                page_size=parse_int(filters["size"], "page size", minimum=1, maximum=1000),
                continuation_token=q.get("token") or None,
            )
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            context["error"] = error.message
            context["refresh_seconds"] = 0
            status_code = error.status
        else:
            context.update(entities=page.entities, next_token=page.continuation_token)
        return self.renderer.render(request, "entities.html", context, status_code)

    async def entity(self, request: Request) -> Response:
        entity_id = request.path_params["entity_id"]
        try:
            found = await self.client.get_entity(entity_id)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._error(request, error)
        if found is None:
            return self._error(
                request,
                HttpError(404, "not_found", f"no entity {entity_id!r} (or it has no state)"),
            )
        context = {"entity": found, "refresh_seconds": LIVE_REFRESH_SECONDS}
        return self.renderer.render(request, "entity.html", context)

    # -- one instance ----------------------------------------------------------------------

    async def instance(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        try:
            state = await operations.require_state(self.client, instance_id)
            events = await self.client.get_orchestration_history(instance_id)
            children = await self.client.query_orchestrations(
                parent_instance_id=instance_id, page_size=MAX_CHILDREN
            )
            waiting = await self.client.why_waiting(state)
            takeovers = await self.client.get_lease_takeovers(instance_id)
            executions = await self.client.get_orchestration_executions(instance_id)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._error(request, error)
        now = datetime.now(UTC)
        chart = layout(build_bars(events, state.runtime_status, now, takeovers), now)
        child_status = {c.instance_id: c.runtime_status for c in children.states}
        context = {
            "state": state,
            "status": state.runtime_status,
            "waiting": waiting,
            "open_items": [] if state.runtime_status.is_terminal else open_items(events),
            "child_status": child_status,
            "now": now,
            "rows": history_rows(events[:MAX_HISTORY_ROWS]),
            "hidden_rows": max(0, len(events) - MAX_HISTORY_ROWS),
            "chart": chart,
            "round": executions[-1].generation + 1 if executions else 1,
            "executions": executions[::-1][:MAX_EXECUTION_ROWS],
            "more_executions": max(0, len(executions) - MAX_EXECUTION_ROWS),
            "children": children.states,
            "more_children": children.continuation_token is not None,
            "actions": [a for a in ACTIONS.values() if a.applies(state.runtime_status)],
            "notice": NOTICES.get(request.query_params.get("done", "")),
            "history_href": f"/api/instances/{quote(instance_id, safe='')}/history",
            "executions_href": f"/api/instances/{quote(instance_id, safe='')}/executions",
            "refresh_seconds": 0 if state.runtime_status.is_terminal else LIVE_REFRESH_SECONDS,
        }
        return self.renderer.render(request, "instance.html", context)

    async def execution_round(self, request: Request) -> Response:
        """One earlier execution's record, with the rounds before and after it."""
        instance_id = request.path_params["instance_id"]
        generation: int = request.path_params["generation"]
        try:
            state = await operations.require_state(self.client, instance_id)
            executions = await self.client.get_orchestration_executions(instance_id)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._error(request, error)
        by_generation = {r.generation: r for r in executions}
        record = by_generation.get(generation)
        if record is None:
            message = f"round {generation} of {instance_id!r} is not stored"
            if executions:
                first, last = executions[0].generation, executions[-1].generation
                message += f" (kept: rounds {first} to {last}; the current round is {last + 1})"
            else:
                message += " (the instance has not continued as new, nor been started again)"
            return self._error(request, HttpError(404, "not_found", message))
        context = {
            "state": state,
            "status": state.runtime_status,
            "record": record,
            "previous": by_generation.get(generation - 1),
            "next": by_generation.get(generation + 1),
            "current_round": executions[-1].generation + 1,
            "summary_length": EXECUTION_SUMMARY_LENGTH,
        }
        return self.renderer.render(request, "round.html", context)

    # -- actions ---------------------------------------------------------------------------

    async def _action_target(
        self, request: Request
    ) -> tuple[Action, OrchestrationState] | Response:
        if self.security.read_only:
            return self.renderer.error(
                request, 403, "Forbidden", "The dashboard is read-only: actions are switched off."
            )
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return self.renderer.error(
                request, 404, "Not found", f"there is no action {request.path_params['action']!r}"
            )
        try:
            state = await operations.require_state(self.client, request.path_params["instance_id"])
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._error(request, error)
        return action, state

    def _confirm_page(
        self,
        request: Request,
        action: Action,
        state: OrchestrationState,
        *,
        values: dict[str, str] | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Response:
        context = {
            "action": action,
            "state": state,
            "status": state.runtime_status,
            "values": {key: "" for key in FORM_FIELDS} | (values or {}),
            "error": error,
            "applies": action.applies(state.runtime_status),
        }
        return self.renderer.render(request, "confirm.html", context, status_code)

    async def confirm(self, request: Request) -> Response:
        target = await self._action_target(request)
        if isinstance(target, Response):
            return target
        action, state = target
        return self._confirm_page(request, action, state)

    async def act(self, request: Request) -> Response:
        target = await self._action_target(request)
        if isinstance(target, Response):
            return target
        action, state = target
        form = await request.form()
        values = {
            key: _field(form, key)
            for key in ("event_name", "event_data", "reason", "new_instance_id")
        }
        try:
            location = await self._perform(action.key, state.instance_id, values)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._confirm_page(
                request, action, state, values=values, error=error.message, status_code=error.status
            )
        return RedirectResponse(location, status_code=303)

    async def _perform(self, key: str, instance_id: str, values: dict[str, str]) -> str:
        """Run the action; return where to go next."""
        reason = values["reason"].strip() or None
        client = self.client
        match key:
            case "raise-event":
                data = parse_json(values["event_data"].encode(), "the event data")
                await operations.raise_event(
                    client, instance_id, values["event_name"].strip(), data
                )
            case "terminate":
                await operations.terminate(client, instance_id, reason)
            case "suspend":
                await operations.suspend(client, instance_id, reason)
            case "resume":
                await operations.resume(client, instance_id, reason)
            case "rewind":
                await operations.rewind(client, instance_id, reason)
            case "restart":
                started = await operations.restart(
                    client, instance_id, new_instance_id=values["new_instance_id"] == "on"
                )
                return instance_href(started, "?done=restart")
            case "purge":
                purged = await operations.purge(client, instance_id)
                return f"/instances?done=purge&count={purged}"
        return instance_href(instance_id, f"?done={key}")

    # -- login -----------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if self.security.token is None:
            return RedirectResponse("/", status_code=303)
        context = {"next": safe_next(request.query_params.get("next")), "error": None}
        return self.renderer.render(request, "login.html", context)

    async def login(self, request: Request) -> Response:
        security = self.security
        if security.token is None:
            return RedirectResponse("/", status_code=303)
        form = await request.form()
        target = safe_next(_field(form, "next"))
        client = client_address(request)
        wait = security.limiter.retry_after(client)
        if wait is not None:
            # Refused without looking at the token, so waiting is the only way to try again.
            error = too_many_attempts(wait)
            page = self.renderer.render(
                request, "login.html", {"next": target, "error": error.message}, 429
            )
            page.headers.update(error.headers)
            return page
        if not security.token_matches(_field(form, "token")):
            security.limiter.failed(client)
            context = {"next": target, "error": "That is not the dashboard's token."}
            return self.renderer.render(request, "login.html", context, 401)
        security.limiter.succeeded(client)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            security.new_session(),
            max_age=int(security.session_lifetime),
            path="/",
            httponly=True,
            samesite="strict",
            secure=security.secure_cookies(request),
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login" if self.security.token else "/", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.security.secure_cookies(request),
        )
        return response
