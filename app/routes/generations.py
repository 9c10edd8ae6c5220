"""`/v1/generations`: submit, read, list, cancel, delete and stream jobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import MetricsDep, ServiceDep, SettingsDep, SignerDep
from app.errors import Conflict, InvalidRequest, NotFound, QueueFull, ServiceUnavailable, responses
from app.generations import GenerationService
from app.schemas import (
    ErrorView,
    GenerationCreate,
    ImageView,
    JobList,
    JobView,
    ProgressView,
    ResolvedParams,
    WebhookDelivery,
    WebhookView,
    maybe_timestamp,
    timestamp,
)
from app.signing import UrlSigner
from contract.jobs import JobRecord, JobStatus, Progress, Stage

router = APIRouter(prefix="/v1/generations", tags=["generations"])


class Renderer:
    """Turns records into the client's job object: signed URLs, queue position, ETA."""

    def __init__(self, service: GenerationService, signer: UrlSigner, base_url: str) -> None:
        self.service, self.signer, self.base_url = service, signer, base_url.rstrip("/")

    def __call__(self, record: JobRecord) -> JobView:
        """The job object of a record."""
        position = self.service.queue_position(record)
        estimate = self.service.estimate(record, position)
        progress = record.progress or Progress.at(Stage.QUEUED, 0, record.params.num_inference_steps)
        return JobView(
            id=record.id,
            status=record.status,
            model=record.model,
            created_at=timestamp(record.created_at),
            started_at=maybe_timestamp(record.started_at),
            finished_at=maybe_timestamp(record.finished_at),
            priority=record.priority,
            queue_position=position,
            estimated_start_at=maybe_timestamp(estimate[0] if estimate else None),
            estimated_finish_at=maybe_timestamp(estimate[1] if estimate else None),
            deadline_at=maybe_timestamp(record.start_by),
            progress=ProgressView(**progress.model_dump()),
            params=ResolvedParams(
                **{
                    **record.params.model_dump(),
                    "init_image": "provided" if record.params.init_image else None,
                    "mask_image": "provided" if record.params.mask_image else None,
                    "control_image": "provided" if record.params.control_image else None,
                }
            ),
            images=self._images(record),
            error=ErrorView(**record.error.model_dump()) if record.error else None,
            cancel_reason=record.cancel_reason,
            webhook=self._webhook(record),
            preview=record.preview if record.status == JobStatus.RUNNING else None,
        )

    def at_state(self, record: JobRecord, state: dict[str, Any]) -> JobView:
        """The job object as of one event: the record, with that event's status and progress."""
        known = {k: v for k, v in state.items() if k in JobRecord.model_fields and v is not None}
        # A preview belongs to the one event that brought it, not to every later one.
        return self(record.model_validate({**record.model_dump(), **known, "preview": state.get("preview")}))

    def _webhook(self, record: JobRecord) -> WebhookView | None:
        if not record.webhook_url:
            return None
        deliveries = [WebhookDelivery(**{**d, "at": timestamp(d["at"])}) for d in self.service.deliveries(record.id)]
        return WebhookView(url=record.webhook_url, events=record.webhook_events, deliveries=deliveries)

    def _images(self, record: JobRecord) -> list[ImageView]:
        if record.status != JobStatus.SUCCEEDED:
            return []
        # Never sign past the image's own deletion at the end of retention.
        not_after = (record.finished_at or record.created_at) + self.service.settings.job_retention_seconds
        images = []
        for image in record.images:
            expires, signature = self.signer.sign(image.key, not_after)
            query = urlencode({"expires": expires, "sig": signature})
            images.append(
                ImageView(
                    url=f"{self.base_url}/v1/images/{image.key}?{query}",
                    url_expires_at=timestamp(expires),
                    width=image.width,
                    height=image.height,
                    seed=image.seed,
                    content_type=image.content_type,
                    reproducibility=image.reproducibility,
                )
            )
        return images


def renderer(request: Request, service: ServiceDep, settings: SettingsDep, signer: SignerDep) -> Renderer:
    """A renderer for this request's base URL (or the configured public one)."""
    return Renderer(service, signer, settings.public_base_url or str(request.base_url))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=responses(Conflict, InvalidRequest, QueueFull, ServiceUnavailable)
    | {413: {"description": "The request body is over `max_body_bytes`."}},
)
def create_generation(
    body: GenerationCreate,
    request: Request,
    response: Response,
    service: ServiceDep,
    settings: SettingsDep,
    signer: SignerDep,
    metrics: MetricsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=256,
            description="Same key + same body: the same job, never run twice; same key + other body: 409.",
        ),
    ] = None,
) -> JobView:
    """Queue a text-to-image generation; answers at once with the job, its id and its `Location`."""
    try:
        record, created = service.submit(body, idempotency_key)
    except InvalidRequest:
        metrics.jobs_rejected.labels("invalid").inc()
        raise
    except QueueFull:
        metrics.jobs_rejected.labels("queue_full").inc()
        raise
    if created:
        metrics.jobs_submitted.labels(record.model).inc()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/generations/{record.id}"
    return renderer(request, service, settings, signer)(record)


@router.get("", response_model=JobList, responses=responses(InvalidRequest, ServiceUnavailable))
def list_generations(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    signer: SignerDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JobList:
    """Jobs newest first, optionally of one status, `limit` per page; follow `next_cursor` for more."""
    records, next_cursor = service.find(status_, limit, cursor)
    render = renderer(request, service, settings, signer)
    return JobList(data=[render(r) for r in records], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobView, responses=responses(NotFound, ServiceUnavailable))
def get_generation(
    job_id: str, request: Request, service: ServiceDep, settings: SettingsDep, signer: SignerDep
) -> JobView:
    """Status, progress, ETA, resolved parameters and (once succeeded) signed image URLs of a job."""
    return renderer(request, service, settings, signer)(service.get(job_id))


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=responses(NotFound, Conflict, ServiceUnavailable),
)
def cancel_generation(
    job_id: str, request: Request, service: ServiceDep, settings: SettingsDep, signer: SignerDep
) -> JobView:
    """Cancel: a queued job never runs; a running one stops at its next denoising step and stores nothing.

    A job that already ended answers 409, its status in the message.
    """
    return renderer(request, service, settings, signer)(service.cancel(job_id))


@router.post(
    "/{job_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=responses(NotFound, QueueFull, ServiceUnavailable),
)
def replay_generation(
    job_id: str, request: Request, response: Response, service: ServiceDep, settings: SettingsDep, signer: SignerDep
) -> JobView:
    """Queue the same generation again (same model and resolved parameters, seed included) as a new job."""
    record = service.replay(job_id)
    response.headers["Location"] = f"/v1/generations/{record.id}"
    return renderer(request, service, settings, signer)(record)


@router.delete(
    "/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound, Conflict, ServiceUnavailable)
)
def delete_generation(job_id: str, service: ServiceDep) -> Response:
    """Delete a finished job and its images now, ahead of its retention (409 while queued or running)."""
    service.delete(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **responses(NotFound),
        200: {
            "content": {"text/event-stream": {}},
            "description": "One `data:` job object per change; ends after the terminal one.",
        },
    },
)
async def stream_generation(
    job_id: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    signer: SignerDep,
    last_event_id: Annotated[str | None, Header(max_length=64, pattern=r"^\d+-\d+$")] = None,
) -> StreamingResponse:
    """Server-sent events: the job object after every change (same format as GET), keep-alive comments,
    resumable with `Last-Event-ID`; the stream closes after the terminal event."""
    await run_in_threadpool(service.get, job_id)  # 404 before the stream starts
    render = renderer(request, service, settings, signer)
    events = _events(request, service, render, job_id, last_event_id or "0-0", settings.sse_keepalive_seconds)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _events(
    request: Request, service: GenerationService, render: Renderer, job_id: str, last: str, keepalive_seconds: float
) -> AsyncIterator[str]:
    redis = request.app.state.async_redis
    key = service.store.events(job_id)
    while not await request.is_disconnected():
        batch = await redis.xread({key: last}, count=100, block=int(keepalive_seconds * 1000))
        if not batch:
            if await redis.exists(service.store.key(job_id)) == 0:
                return  # deleted or past retention
            yield ": keep-alive\n\n"
            continue
        for entry_id, fields in batch[0][1]:
            last = entry_id.decode()
            state: dict[str, Any] = json.loads(fields[b"state"])
            view = await run_in_threadpool(_view_at, service, render, job_id, state)
            if view is None:
                return
            yield f"id: {last}\ndata: {view.model_dump_json()}\n\n"
            if JobStatus(state["status"]).terminal:
                return
        await asyncio.sleep(0)


def _view_at(service: GenerationService, render: Renderer, job_id: str, state: dict[str, Any]) -> JobView | None:
    """The job object as of one event: the record, with the event's status and progress."""
    record = service.store.get(job_id)
    return None if record is None else render.at_state(record, state)
