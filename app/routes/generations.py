"""`/v1/generations`: submit a job and read it back."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response, status

from app.deps import MetricsDep, ServiceDep, SettingsDep, SignerDep
from app.errors import InvalidRequest, NotFound, QueueFull, ServiceUnavailable, responses
from app.schemas import (
    ErrorView,
    GenerationCreate,
    ImageView,
    JobView,
    ProgressView,
    ResolvedParams,
    maybe_timestamp,
    timestamp,
)
from contract.jobs import JobRecord, JobStatus

router = APIRouter(prefix="/v1/generations", tags=["generations"])


def _base_url(request: Request, public_base_url: str | None) -> str:
    return (public_base_url or str(request.base_url)).rstrip("/")


def render(record: JobRecord, position: int | None, base_url: str, signer: SignerDep,
           retention_seconds: int) -> JobView:
    """The client's view of a record, with freshly signed image URLs."""
    images = []
    if record.status == JobStatus.SUCCEEDED:
        # Never sign past the image's own deletion at the end of retention.
        not_after = (record.finished_at or record.created_at) + retention_seconds
        for image in record.images:
            expires, signature = signer.sign(image.key, not_after)
            query = urlencode({"expires": expires, "sig": signature})
            images.append(ImageView(
                url=f"{base_url}/v1/images/{image.key}?{query}", url_expires_at=timestamp(expires),
                width=image.width, height=image.height, seed=image.seed, content_type=image.content_type))
    return JobView(
        id=record.id,
        status=record.status,
        model=record.model,
        created_at=timestamp(record.created_at),
        started_at=maybe_timestamp(record.started_at),
        finished_at=maybe_timestamp(record.finished_at),
        queue_position=position,
        progress=(ProgressView(**record.progress.model_dump())
                  if record.progress and record.status == JobStatus.RUNNING else None),
        params=ResolvedParams(**record.params.model_dump()),
        images=images,
        error=ErrorView(**record.error.model_dump()) if record.error else None,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=responses(InvalidRequest, QueueFull, ServiceUnavailable)
    | {413: {"description": "The request body is over `max_body_bytes`."}},
)
def create_generation(body: GenerationCreate, request: Request, response: Response, service: ServiceDep,
                      settings: SettingsDep, signer: SignerDep, metrics: MetricsDep) -> JobView:
    """Queue a text-to-image generation; answers at once with the job, its id and its `Location`."""
    try:
        record = service.submit(body)
    except InvalidRequest:
        metrics.jobs_rejected.labels("invalid").inc()
        raise
    except QueueFull:
        metrics.jobs_rejected.labels("queue_full").inc()
        raise
    metrics.jobs_submitted.labels(record.model).inc()
    response.headers["Location"] = f"/v1/generations/{record.id}"
    position = service.queue_position(record)
    return render(record, position, _base_url(request, settings.public_base_url), signer,
                  settings.job_retention_seconds)


@router.get("/{job_id}", response_model=JobView, responses=responses(NotFound, ServiceUnavailable))
def get_generation(job_id: str, request: Request, service: ServiceDep, settings: SettingsDep,
                   signer: SignerDep) -> JobView:
    """Status, progress, resolved parameters and (once succeeded) signed image URLs of a job."""
    record = service.get(job_id)
    return render(record, service.queue_position(record), _base_url(request, settings.public_base_url), signer,
                  settings.job_retention_seconds)
