"""The API's access log: one line per HTTP request on the logger `diffusion.access`.

Fields: `request_id` (bound by `RequestContext`, which must wrap this middleware), `method`, `route`
(the route template, e.g. `/v1/images/{job_id}/{name}`: never the path or the query string, which
can carry image URL signatures or ids), `status`, `duration_ms`, and `key_name` when the request was
authenticated. Never the body, so never a prompt. The format is the process's (`contract.logs`):
one JSON object per line with `DIFFUSION_LOG_FORMAT=json`. uvicorn's own access log stays off.

Contract with authentication: whatever authenticates a request sets `request.state.key_name` (the
name of the API key, never the key itself). Starlette keeps `request.state` in the ASGI scope's
`state` dict, shared by every middleware and the route, so this middleware reads
`scope["state"]["key_name"]` once the response has been sent.

Probes and scrapes (`/healthz`, `/readyz`, `/metrics`) that succeed are logged at DEBUG, so every
replica's log is not mostly health checks; anything else, and any of those failing, at INFO.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("diffusion.access")

QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLog:
    """ASGI middleware writing the access log line of every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            fields: dict[str, object] = {
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            key_name = scope.get("state", {}).get("key_name")
            if key_name:
                fields["key_name"] = str(key_name)
            quiet = route in QUIET_ROUTES and status < 400
            log.log(logging.DEBUG if quiet else logging.INFO, "%s %s %s", scope["method"], route, status, extra=fields)
