"""`POST /v1/images/generations`: OpenAI's Images API shape over the same queue and workers.

The request waits for the job (it is queued like any other) and answers in OpenAI's response
shape; errors use OpenAI's error shape. Fields that have no meaning here are accepted and ignored
(listed in the README).
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.deps import CallerDep, JobsDep, RendererDep, SettingsDep, StorageDep
from app.errors import ApiError
from app.schemas import GenerationCreate
from contract.jobs import JobStatus

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

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|\d{1,5}x\d{1,5})$")
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
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


@router.post("/generations", responses={400: {"description": "OpenAI-shaped error"}})
def create_image(
    jobs: JobsDep,
    render: RendererDep,
    caller: CallerDep,
    settings: SettingsDep,
    storage: StorageDep,
    payload: dict[str, Any] = Body(...),
) -> JSONResponse:
    """Generate images (OpenAI Images API); answers when the job has finished."""
    try:
        req = OpenAIImageRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        return openai_error(400, f"{param}: {first['msg']}", param)
    width = height = None
    if req.size and req.size != "auto":
        width, height = (int(v) for v in req.size.split("x"))
    body = GenerationCreate(
        prompt=req.prompt,
        model=req.model,
        num_images=req.n,
        width=width,
        height=height,
        output_format=req.output_format or "png",
        output_quality=req.output_compression if req.output_compression is not None else 90,
    )
    try:
        record, _ = jobs.submit(body, caller)
    except ApiError as exc:
        param = {"num_images": "n", "width": "size", "height": "size"}.get(exc.param or "", exc.param)
        status = 400 if exc.status == 422 else exc.status
        return openai_error(status, exc.message, param, "invalid_request_error" if status < 500 else "server_error")
    deadline = time.monotonic() + settings.job_timeout_seconds + 60
    while not record.status.terminal and time.monotonic() < deadline:
        time.sleep(0.05)
        record = jobs.get(record.id, caller)
    if record.status != JobStatus.SUCCEEDED:
        message = record.error.message if record.error else f"generation {record.status.value}"
        return openai_error(500, message, None, "server_error", record.error.type.value if record.error else None)
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
