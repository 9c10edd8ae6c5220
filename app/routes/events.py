"""`GET /v1/generations/{id}/events`: the job object after every change, as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import CallerDep, JobsDep, RendererDep, ServicesDep
from app.errors import NotFound, Unauthorized, responses
from app.jobs import JobService
from app.schemas import JobView
from app.views import JobRenderer
from contract.jobs import JobStatus

router = APIRouter(prefix="/v1/generations", tags=["generations"])


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **responses(NotFound, Unauthorized),
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
    events = _events(
        request,
        services.async_redis,
        jobs,
        render,
        job_id,
        last_event_id or "0-0",
        services.settings.sse_keepalive_seconds,
    )
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _events(
    request: Request, redis: Any, jobs: JobService, render: JobRenderer, job_id: str, last: str, keepalive: float
) -> AsyncIterator[str]:
    key = jobs.store.events(job_id)
    while not await request.is_disconnected():
        batch = await redis.xread({key: last}, count=100, block=int(keepalive * 1000))
        if not batch:
            if await redis.exists(jobs.store.key(job_id)) == 0:
                return  # deleted or past retention
            yield ": keep-alive\n\n"
            continue
        for entry_id, fields in batch[0][1]:
            last = entry_id.decode()
            state: dict[str, Any] = json.loads(fields[b"state"])
            view = await run_in_threadpool(_view_at, jobs, render, job_id, state)
            if view is None:
                return
            yield f"id: {last}\ndata: {view.model_dump_json()}\n\n"
            if JobStatus(state["status"]).terminal:
                return
        await asyncio.sleep(0)


def _view_at(jobs: JobService, render: JobRenderer, job_id: str, state: dict[str, Any]) -> JobView | None:
    """The job object as of one event: the record, with the event's status and progress."""
    record = jobs.store.get(job_id)
    return None if record is None else render.at_state(record, state)
