"""`/v1/generations`: submit, read, list, cancel, replay and delete jobs (the event stream is in `events`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from app.deps import CallerDep, JobsDep, MetricsDep, RendererDep
from app.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    QueueFull,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    responses,
)
from app.schemas import GenerationCreate, JobList, JobView
from contract.jobs import JobStatus

router = APIRouter(prefix="/v1/generations", tags=["generations"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=responses(Conflict, InvalidRequest, Unauthorized, QueueFull, RateLimited, ServiceUnavailable)
    | {413: {"description": "The request body is over `max_body_bytes`."}},
)
def create_generation(
    body: GenerationCreate,
    response: Response,
    jobs: JobsDep,
    render: RendererDep,
    metrics: MetricsDep,
    caller: CallerDep,
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
        record, created = jobs.submit(body, caller, idempotency_key)
    except InvalidRequest:
        metrics.jobs_rejected.labels("invalid").inc()
        raise
    except QueueFull:
        metrics.jobs_rejected.labels("queue_full").inc()
        raise
    except RateLimited:
        metrics.jobs_rejected.labels("rate_limited").inc()
        raise
    if created:
        metrics.jobs_submitted.labels(record.model, caller.name or "").inc()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/generations/{record.id}"
    return render(record)


@router.get("", response_model=JobList, responses=responses(InvalidRequest, Unauthorized, ServiceUnavailable))
def list_generations(
    jobs: JobsDep,
    render: RendererDep,
    caller: CallerDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JobList:
    """Jobs newest first, optionally of one status, `limit` per page; follow `next_cursor` for more."""
    records, next_cursor = jobs.find(caller, status_, limit, cursor)
    return JobList(data=[render(r) for r in records], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobView, responses=responses(NotFound, Unauthorized, ServiceUnavailable))
def get_generation(job_id: str, jobs: JobsDep, render: RendererDep, caller: CallerDep) -> JobView:
    """Status, progress, ETA, resolved parameters and (once succeeded) signed image URLs of a job."""
    return render(jobs.get(job_id, caller))


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=responses(NotFound, Unauthorized, Conflict, ServiceUnavailable),
)
def cancel_generation(job_id: str, jobs: JobsDep, render: RendererDep, caller: CallerDep) -> JobView:
    """Cancel: a queued job never runs; a running one stops at its next denoising step and stores nothing.

    A job that already ended answers 409, its status in the message.
    """
    return render(jobs.cancel(job_id, caller))


@router.post(
    "/{job_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=responses(NotFound, Unauthorized, QueueFull, RateLimited, ServiceUnavailable),
)
def replay_generation(
    job_id: str, response: Response, jobs: JobsDep, render: RendererDep, caller: CallerDep
) -> JobView:
    """Queue the same generation again (same model and resolved parameters, seed included) as a new job."""
    record = jobs.replay(job_id, caller)
    response.headers["Location"] = f"/v1/generations/{record.id}"
    return render(record)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Unauthorized, Conflict, ServiceUnavailable),
)
def delete_generation(job_id: str, jobs: JobsDep, caller: CallerDep) -> Response:
    """Delete a finished job and its images now, ahead of its retention (409 while queued or running)."""
    jobs.delete(job_id, caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
