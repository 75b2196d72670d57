"""The dashboard's schedule pages: the list, and one schedule with its next and recent runs
and its actions (pause, resume, trigger, delete)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from duratask.client import AsyncTaskHubClient
from duratask.dashboard.errors import HttpError, from_exception
from duratask.dashboard.hub import ClientSource
from duratask.dashboard.security import Security
from duratask.dashboard.templating import Renderer

ACTIONS = ("pause", "resume", "trigger", "delete")
NOTICES = {
    "pause": "The schedule is paused.",
    "resume": "The schedule is resumed.",
    "trigger": "A run was started.",
}


def schedule_href(schedule_id: str, suffix: str = "") -> str:
    """The page of a schedule."""
    return f"/schedules/{quote(schedule_id, safe='')}{suffix}"


class SchedulePages:
    """Serves the schedule pages with the client of ``source``."""

    def __init__(self, source: ClientSource, renderer: Renderer, security: Security) -> None:
        self.source = source
        self.renderer = renderer
        self.security = security

    @property
    def client(self) -> AsyncTaskHubClient:
        return self.source.client

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/schedules", self.schedules, methods=["GET"]),
            Route("/schedules/{schedule_id:path}/actions/{action}", self.act, methods=["POST"]),
            Route("/schedules/{schedule_id:path}", self.schedule, methods=["GET"]),
        ]

    def _error(self, request: Request, error: HttpError) -> Response:
        title = "Not found" if error.status == 404 else "Cannot do that"
        return self.renderer.error(request, error.status, title, error.message)

    async def schedules(self, request: Request) -> Response:
        found = await self.client.list_schedules()
        done = request.query_params.get("done", "")
        notice = "The schedule was deleted." if done == "delete" else None
        context = {"schedules": found, "schedule_href": schedule_href, "notice": notice}
        return self.renderer.render(request, "schedules.html", context)

    async def schedule(self, request: Request) -> Response:
        try:
            described = await self.client.describe_schedule(
                request.path_params["schedule_id"], runs=20, next_fire_times=10
            )
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._error(request, error)
        context = {
            "described": described,
            "info": described.info,
            "schedule_href": schedule_href,
            "notice": NOTICES.get(request.query_params.get("done", "")),
        }
        return self.renderer.render(request, "schedule.html", context)

    async def act(self, request: Request) -> Response:
        if self.security.read_only:
            return self.renderer.error(
                request, 403, "Forbidden", "The dashboard is read-only: actions are switched off."
            )
        schedule_id = request.path_params["schedule_id"]
        action = request.path_params["action"]
        if action not in ACTIONS:
            return self.renderer.error(request, 404, "Not found", f"there is no action {action!r}")
        form = await request.form()
        raw_note = form.get("note")
        note = raw_note.strip() or None if isinstance(raw_note, str) else None
        try:
            match action:
                case "pause":
                    await self.client.pause_schedule(schedule_id, note)
                case "resume":
                    await self.client.resume_schedule(schedule_id, note)
                case "trigger":
                    await self.client.trigger_schedule(schedule_id)
                case _:
                    await self.client.delete_schedule(schedule_id)
                    return RedirectResponse("/schedules?done=delete", status_code=303)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            return self._error(request, error)
        return RedirectResponse(schedule_href(schedule_id, f"?done={action}"), status_code=303)
