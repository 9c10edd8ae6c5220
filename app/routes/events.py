"""`GET /v1/generations/{id}/events`: the job object after every change, as server-sent events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from app.deps import CallerDep, JobsDep, RendererDep, ServicesDep
from app.errors import NotFound, Overloaded, Unauthorized, responses
from app.jobs import JobService
from app.streams import SharedRenders, Subscription
from app.views import JobRenderer
from contract.jobs import JobStatus

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/generations", tags=["generations"])


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **responses(NotFound, Unauthorized, Overloaded),
        200: {
            "content": {"text/event-stream": {}},
            "description": "One `data:` job object per change; ends after the terminal one.",
        },
    },
)
async def stream_generation(
    job_id: str,
    request: Request,
    jobs: JobsDep,
    render: RendererDep,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header(max_length=64, pattern=r"^\d+-\d+$")] = None,
) -> StreamingResponse:
    """Server-sent events: the job object after every change (same format as GET), keep-alive comments,
    resumable with `Last-Event-ID`; the stream closes after the terminal event."""
    await run_in_threadpool(jobs.get, job_id, caller)  # 404 (unknown, or another caller's) before the stream
    subscription = services.hub.subscribe(jobs.store.events(job_id), last_event_id or "0-0")
    follow = await subscription.__aenter__()  # 429 before the response starts when the server is full
    events = _events(
        request, follow, subscription, jobs, render, services.renders, job_id, services.settings.sse_keepalive_seconds
    )
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _events(
    request: Request,
    follow: Subscription,
    subscription: Any,
    jobs: JobService,
    render: JobRenderer,
    renders: SharedRenders,
    job_id: str,
    keepalive: float,
) -> AsyncIterator[str]:
    try:
        async for chunk in _follow(request, follow, jobs, render, renders, job_id, keepalive):
            yield chunk
    except RedisError as exc:  # the answer has started: end the stream; the client resumes with Last-Event-ID
        log.warning("event stream cut: Redis unreachable (%s)", exc, extra={"job_id": job_id})
    finally:
        await subscription.__aexit__(None, None, None)


async def _follow(
    request: Request,
    follow: Subscription,
    jobs: JobService,
    render: JobRenderer,
    renders: SharedRenders,
    job_id: str,
    keepalive: float,
) -> AsyncIterator[str]:
    """The stream's chunks: the backlog after Last-Event-ID, then each new event, keep-alives between."""
    pending = await follow.backlog()
    if not pending and await run_in_threadpool(_over, jobs, job_id):
        return  # resumed after the terminal event (EventSource reconnects): nothing will ever come
    while not await request.is_disconnected():
        entry = pending.pop(0) if pending else await follow.next(keepalive)
        if entry is None:
            if not await run_in_threadpool(jobs.store.redis.exists, jobs.store.key(job_id)):
                return  # deleted or past retention
            yield ": keep-alive\n\n"
            continue
        entry_id, fields = entry
        state: dict[str, Any] = json.loads(fields[b"state"])
        view = await renders.get(
            (job_id, entry_id, render.base_url),
            partial(run_in_threadpool, _view_at, jobs, render, job_id, state),
        )
        if view is None:
            return
        yield f"id: {entry_id}\ndata: {view}\n\n"
        if JobStatus(state["status"]).terminal:
            return


def _over(jobs: JobService, job_id: str) -> bool:
    """Whether the job ended (its terminal event is in the stream: one script writes both) or is gone."""
    record = jobs.store.get(job_id)
    return record is None or record.status.terminal


def _view_at(jobs: JobService, render: JobRenderer, job_id: str, state: dict[str, Any]) -> str | None:
    """The job object (JSON) as of one event: the record, with the event's status and progress."""
    record = jobs.store.get(job_id)
    return None if record is None else render.at_state(record, state).model_dump_json()
