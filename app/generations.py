"""Generation jobs on the API side: resolve and check a request, queue it, and read a job back."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from typing import Any

from redis import Redis
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RqStatus
from rq.serializers import JSONSerializer

from app.config import ApiSettings
from app.errors import InvalidRequest, NotFound, QueueFull
from app.schemas import GenerationCreate
from contract.jobs import (
    SEED_MODULUS,
    GenerationParams,
    JobError,
    JobErrorType,
    JobPayload,
    JobRecord,
    JobStatus,
    now,
)
from contract.logs import prompt_digest
from contract.queues import GENERATE_FUNCTION, model_info_key, queue_name
from contract.records import JobStore
from contract.storage import JOB_ID_PATTERN

log = logging.getLogger(__name__)

# RQ keeps its own job hash only briefly; our record is what clients read.
RQ_RESULT_TTL_SECONDS = 300


class GenerationService:
    """Everything the routes need about jobs; holds no per-request state."""

    def __init__(self, redis: Redis, settings: ApiSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.store = JobStore(redis, settings.key_prefix, settings.job_retention_seconds)

    def queue(self, model: str) -> Queue:
        """The RQ queue of a model, with the JSON serializer (never pickle)."""
        return Queue(queue_name(self.settings.key_prefix, model), connection=self.redis, serializer=JSONSerializer)

    def model_defaults(self, model: str) -> dict[str, Any]:
        """Defaults a ready worker published for its model, or {} before any did."""
        raw = self.redis.get(model_info_key(self.settings.key_prefix, model))
        return json.loads(raw) if raw else {}

    def resolve(self, body: GenerationCreate) -> tuple[str, GenerationParams]:
        """Fill defaults and check every configured limit; raises InvalidRequest naming the field."""
        s = self.settings
        model = body.model or s.default_model
        if model not in s.models:
            raise InvalidRequest(f"unknown model {model!r}; served models: {', '.join(s.models)}", "model")
        defaults = self.model_defaults(model)
        params = GenerationParams(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            width=body.width or defaults.get("width", s.default_image_side),
            height=body.height or defaults.get("height", s.default_image_side),
            num_inference_steps=body.num_inference_steps or defaults.get("steps", s.default_inference_steps),
            guidance_scale=(body.guidance_scale if body.guidance_scale is not None
                            else defaults.get("guidance_scale", s.default_guidance_scale)),
            seed=body.seed if body.seed is not None else secrets.randbelow(SEED_MODULUS),
            num_images=body.num_images,
        )
        check_limits(params, s)
        return model, params

    def submit(self, body: GenerationCreate) -> JobRecord:
        """Write the record and enqueue the job in one Redis transaction: both land or neither."""
        model, params = self.resolve(body)
        queue = self.queue(model)
        if queue.count >= self.settings.max_queue_depth:
            raise QueueFull(
                f"the queue for model {model!r} is full ({self.settings.max_queue_depth} jobs); retry later",
                headers={"Retry-After": str(self.settings.queue_full_retry_after_seconds)},
            )
        job_id = uuid.uuid4().hex
        record = JobRecord(id=job_id, model=model, status=JobStatus.QUEUED, params=params, created_at=now())
        payload = JobPayload(job_id=job_id, model=model, params=params, created_at=record.created_at)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()  # explicit MULTI first: RQ adds its commands to the same transaction
            self.store.create(record, pipe)
            queue.enqueue_call(
                GENERATE_FUNCTION,
                kwargs={"payload": payload.model_dump(mode="json")},
                job_id=job_id,
                # The worker enforces the real limit at step boundaries; RQ's alarm is a backstop.
                timeout=self.settings.job_timeout_seconds + 60,
                retry=Retry(max=self.settings.job_retries) if self.settings.job_retries else None,
                result_ttl=RQ_RESULT_TTL_SECONDS,
                failure_ttl=self.settings.job_retention_seconds,
                description=f"generate model={model}",
                pipeline=pipe,
            )
            pipe.execute()
        log.info("job queued", extra={"job_id": job_id, "model": model, "prompt_sha": prompt_digest(body.prompt),
                                      "prompt_chars": len(body.prompt)})
        return record

    def get(self, job_id: str) -> JobRecord:
        """The job's record, reconciled with RQ when a worker was lost; NotFound past retention."""
        record = self.store.get(job_id) if JOB_ID_PATTERN.match(job_id) else None
        if record is None:
            raise NotFound(f"no generation {job_id!r} (unknown, or past its retention)", "id")
        if record.status.terminal:
            return record
        return self._reconcile(record)

    def _reconcile(self, record: JobRecord) -> JobRecord:
        try:
            rq_status = Job.fetch(record.id, connection=self.redis, serializer=JSONSerializer).get_status()
        except NoSuchJobError:
            return record
        if rq_status == RqStatus.FAILED:
            # RQ gave up (a worker died on every retry, or the job crashed outside our handler).
            error = JobError(type=JobErrorType.WORKER_LOST,
                             message="the worker running this job stopped and its retries are exhausted")
            self.store.fail(record.id, error)
            return self.store.get(record.id) or record
        if rq_status in (RqStatus.QUEUED, RqStatus.SCHEDULED) and record.status == JobStatus.RUNNING:
            # A lost worker's job waits for another worker: show it queued again.
            return record.model_copy(update={"status": JobStatus.QUEUED, "progress": None})
        return record

    def queue_position(self, record: JobRecord) -> int | None:
        """Jobs ahead of this one in its model's queue, while it is queued."""
        if record.status != JobStatus.QUEUED:
            return None
        return self.queue(record.model).get_job_position(record.id)

    def ready_workers(self, model: str) -> int:
        """Workers currently registered on the model's queue (they register only once warm)."""
        return len(Worker.all(queue=self.queue(model)))


def check_limits(p: GenerationParams, s: ApiSettings) -> None:
    """Each configured limit, checked before anything is queued; the first violation names its field."""
    if len(p.prompt) > s.max_prompt_chars:
        raise InvalidRequest(f"prompt is {len(p.prompt)} characters; at most {s.max_prompt_chars}", "prompt")
    if p.negative_prompt is not None and len(p.negative_prompt) > s.max_prompt_chars:
        raise InvalidRequest(f"negative_prompt is over {s.max_prompt_chars} characters", "negative_prompt")
    for name, side in (("width", p.width), ("height", p.height)):
        if not s.min_image_side <= side <= s.max_image_side or side % 8:
            raise InvalidRequest(
                f"{name} must be a multiple of 8 from {s.min_image_side} to {s.max_image_side}; got {side}", name)
    if p.width * p.height > s.max_image_pixels:
        raise InvalidRequest(f"width*height is {p.width * p.height} pixels; at most {s.max_image_pixels}", "width")
    if p.num_inference_steps > s.max_inference_steps:
        raise InvalidRequest(f"num_inference_steps must be at most {s.max_inference_steps}", "num_inference_steps")
    if p.guidance_scale > s.max_guidance_scale:
        raise InvalidRequest(f"guidance_scale must be at most {s.max_guidance_scale}", "guidance_scale")
    if p.num_images > s.max_images_per_request:
        raise InvalidRequest(f"num_images must be at most {s.max_images_per_request}", "num_images")
