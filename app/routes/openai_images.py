"""`POST /v1/images/generations`: OpenAI's Images API shape over the same queue and workers.

The request waits for the job (it is queued like any other) and answers in OpenAI's response
shape; errors use OpenAI's error shape. Fields that have no meaning here are accepted and ignored
(listed in the README). Waiting holds no thread: the route follows the job's event stream through
the process's event hub, stops (and cancels the job) when the client goes away, and at most
`DIFFUSION_MAX_LONG_POLLS` requests wait at once per API process (429 past that).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from app.auth import Caller
from app.deps import CallerDep, JobsDep, RendererDep, ServicesDep
from app.errors import ApiError, Conflict, InvalidRequest
from app.jobs import JobService
from app.schemas import GenerationCreate
from app.streams import EventHub
from app.views import JobRenderer
from contract.jobs import JobRecord, JobStatus
from contract.storage import Storage

router = APIRouter(prefix="/v1/images", tags=["openai"])

IGNORED = (
    "background",
    "complexity",
    "frame_count",
    "frame_duration_ms",
    "moderation",
    "partial_images",
    "quality",
    "safety_identifier",
    "style",
    "svg",
    "user",
)


class OpenAIImageRequest(BaseModel):
    """OpenAI's image generation request; see IGNORED for accepted fields with no effect here."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=32000)
    model: str | None = Field(default=None, max_length=64)
    n: StrictInt = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|\d{1,5}x\d{1,5})$")
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: StrictInt | None = Field(default=None, ge=0, le=100)
    stream: Literal[False] | None = None
    background: Any = None
    complexity: Any = None
    frame_count: Any = None
    frame_duration_ms: Any = None
    moderation: Any = None
    partial_images: Any = None
    quality: Any = None
    safety_identifier: Any = None
    style: Any = None
    svg: Any = None
    user: Any = None


def openai_error(
    status: int, message: str, param: str | None = None, type_: str = "invalid_request_error", code: str | None = None
) -> JSONResponse:
    """OpenAI's error shape."""
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status
    )


# Our field names -> the request fields of OpenAI's shape they come from.
OPENAI_NAMES = {"num_images": "n", "width": "size", "height": "size", "output_quality": "output_compression"}


def as_openai(exc: ApiError) -> JSONResponse:
    """One of our errors in OpenAI's shape (their field names, 400 for bad input)."""
    param = OPENAI_NAMES.get(exc.param or "", exc.param)
    status = 400 if exc.status == 422 else exc.status
    response = openai_error(status, exc.message, param, "invalid_request_error" if status < 500 else "server_error")
    response.headers.update(exc.headers or {})
    return response


@router.post("/generations", responses={400: {"description": "OpenAI-shaped error"}})
async def create_image(
    body: OpenAIImageRequest,
    request: Request,
    jobs: JobsDep,
    render: RendererDep,
    caller: CallerDep,
    services: ServicesDep,
) -> Response:
    """Generate images (OpenAI Images API); answers when the job has finished."""
    try:
        generation = _generation(body)
    except InvalidRequest as exc:
        return as_openai(exc)
    polls = services.long_polls
    if polls.waiting >= polls.limit:
        message = f"this server has {polls.limit} image requests waiting already; retry shortly"
        refused = openai_error(429, message, None, "rate_limit_exceeded")
        refused.headers["Retry-After"] = "5"
        return refused
    polls.waiting += 1
    try:
        record, _ = await run_in_threadpool(jobs.submit, generation, caller)
        finished = await _until_done(
            request, services.hub, jobs, record, caller, services.settings.job_timeout_seconds + 60
        )
    except ApiError as exc:
        return as_openai(exc)
    finally:
        polls.waiting -= 1
    if finished is None:  # the client went away: nobody will read the images
        return Response(status_code=499)
    if finished.status != JobStatus.SUCCEEDED:
        error = finished.error
        message = error.message if error else f"generation {finished.status.value}"
        return openai_error(500, message, None, "server_error", error.type.value if error else None)
    return await run_in_threadpool(_answer, body, finished, render, services.storage)


def _generation(req: OpenAIImageRequest) -> GenerationCreate:
    """Our request for an OpenAI-shaped one; InvalidRequest naming the field when it breaks one of our rules
    (control characters in the prompt, a size or compression out of our bounds)."""
    width = height = None
    if req.size and req.size != "auto":
        width, height = (int(v) for v in req.size.split("x"))
    try:
        return GenerationCreate(
            prompt=req.prompt,
            model=req.model,
            num_images=req.n,
            width=width,
            height=height,
            output_format=req.output_format or "png",
            output_quality=req.output_compression if req.output_compression is not None else 90,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else None
        name = OPENAI_NAMES.get(field or "", field)
        raise InvalidRequest(f"{name or 'body'}: {first['msg']}", field) from None


async def _until_done(
    request: Request, hub: EventHub, jobs: JobService, record: JobRecord, caller: Caller, timeout: float
) -> JobRecord | None:
    """The job's final record, following its events; None (job canceled) when the client disconnected."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with hub.subscribe(jobs.store.events(record.id), "0-0") as follow:
        pending = await follow.backlog()
        while asyncio.get_running_loop().time() < deadline:
            entry = pending.pop(0) if pending else await follow.next(1.0)
            if entry is not None and JobStatus(json.loads(entry[1][b"state"])["status"]).terminal:
                return await run_in_threadpool(jobs.get, record.id, caller)
            if entry is None and await request.is_disconnected():
                with contextlib.suppress(Conflict):  # it ended meanwhile
                    await run_in_threadpool(jobs.cancel, record.id, caller)
                return None
    return await run_in_threadpool(jobs.get, record.id, caller)


def _answer(req: OpenAIImageRequest, record: JobRecord, render: JobRenderer, storage: Storage) -> JSONResponse:
    view = render(record)
    if req.response_format == "b64_json":
        data = [{"b64_json": base64.b64encode(storage.get(image.key)).decode()} for image in record.images]
    else:
        data = [{"url": image.url} for image in view.images]
    return JSONResponse(
        {
            "created": int(record.created_at),
            "data": data,
            "output_format": record.params.output_format,
            "size": f"{record.params.width}x{record.params.height}",
        }
    )
