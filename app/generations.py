"""Generation jobs on the API side: resolve and check a request, queue it, read, cancel, list and delete jobs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import secrets
import time
import uuid
from typing import Any

from PIL import Image
from redis import Redis
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RqStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from app import eta, inputs, webhooks
from app.config import ApiSettings
from app.errors import Conflict, InvalidRequest, NotFound, QueueFull, ServiceUnavailable
from app.limits import check_limits, check_loras, check_model_limits
from app.schemas import GenerationCreate
from contract.jobs import (
    SEED_MODULUS,
    CancelReason,
    GenerationParams,
    JobError,
    JobErrorType,
    JobPayload,
    JobRecord,
    JobStatus,
    Priority,
    Progress,
    Stage,
    WebhookEvent,
    now,
)
from contract.logs import prompt_digest
from contract.queues import (
    GENERATE_FUNCTION,
    PRIORITIES,
    idempotency_key,
    index_key,
    model_info_key,
    queue_name,
    webhook_log_key,
)
from contract.records import JobStore
from contract.storage import JOB_ID_PATTERN, LocalStorage, input_key

log = logging.getLogger(__name__)

# RQ keeps its own job hash only briefly; our record is what clients read.
RQ_RESULT_TTL_SECONDS = 300
IDEMPOTENT_WAIT_SECONDS = 5.0


class GenerationService:
    """Everything the routes need about jobs; holds no per-request state."""

    def __init__(self, redis: Redis, settings: ApiSettings, storage: LocalStorage) -> None:
        self.redis = redis
        self.settings = settings
        self.storage = storage
        self.store = JobStore(redis, settings.key_prefix, settings.job_retention_seconds)

    def queue(self, model: str, priority: str = Priority.NORMAL) -> Queue:
        """The RQ queue of a model and priority, with the JSON serializer (never pickle)."""
        name = queue_name(self.settings.key_prefix, model, priority)
        return Queue(name, connection=self.redis, serializer=JSONSerializer)

    def depth(self, model: str) -> int:
        """Jobs waiting for a model, all priorities."""
        return sum(self.queue(model, p).count for p in PRIORITIES)

    def model_defaults(self, model: str) -> dict[str, Any]:
        """Defaults a ready worker published for its model, or {} before any did."""
        raw = self.redis.get(model_info_key(self.settings.key_prefix, model))
        return json.loads(raw) if raw else {}

    def resolve(self, body: GenerationCreate) -> tuple[str, GenerationParams, dict[str, Image.Image]]:
        """Fill defaults, decode input images and check every limit; raises InvalidRequest naming the field."""
        s = self.settings
        images = inputs.from_request(body, s)
        sized = images.get("init") or images.get("control")
        if sized is not None:
            width, height = sized.size
            if (body.width or width, body.height or height) != (width, height):
                raise InvalidRequest(
                    f"width and height must match the input image ({width}x{height}) or be omitted", "width"
                )
            body = body.model_copy(update={"width": width, "height": height})
        if "init" in images:
            body = body.model_copy(update={"strength": body.strength or 0.8})
        model = body.model or s.default_model
        if model not in s.models:
            raise InvalidRequest(f"unknown model {model!r}; served models: {', '.join(s.models)}", "model")
        if s.require_ready_worker and self.ready_workers(model) == 0:
            raise ServiceUnavailable(
                f"model {model!r} is served, but no worker for it is ready now; retry shortly",
                "model",
                headers={"Retry-After": "10"},
            )
        defaults = self.model_defaults(model)
        params = GenerationParams(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            width=body.width or defaults.get("width", s.default_image_side),
            height=body.height or defaults.get("height", s.default_image_side),
            num_inference_steps=body.num_inference_steps or defaults.get("steps", s.default_inference_steps),
            guidance_scale=(
                body.guidance_scale
                if body.guidance_scale is not None
                else defaults.get("guidance_scale", s.default_guidance_scale)
            ),
            seed=body.seed if body.seed is not None else secrets.randbelow(SEED_MODULUS),
            num_images=body.num_images,
            scheduler=body.scheduler or defaults.get("scheduler"),
            output_format=body.output_format,
            output_quality=body.output_quality,
            strength=body.strength,
            loras=[lora.model_dump() for lora in body.loras or []],
            controlnet=body.controlnet,
            controlnet_conditioning_scale=body.controlnet_conditioning_scale,
        )
        check_limits(params, s)
        valid = defaults.get("schedulers")
        if body.scheduler is not None and valid is not None and body.scheduler not in valid:
            raise InvalidRequest(
                f"scheduler {body.scheduler!r} does not fit model {model!r}; valid: {', '.join(valid)}", "scheduler"
            )
        check_loras(body, model, defaults, s.max_loras_per_request)
        check_model_limits(params, model, defaults)
        if body.controlnet is not None and body.controlnet not in defaults.get("controlnets", []):
            raise InvalidRequest(
                f"ControlNet {body.controlnet!r} is not configured for model {model!r}; available: "
                f"{', '.join(defaults.get('controlnets', [])) or 'none'}",
                "controlnet",
            )
        if body.timeout_seconds is not None and body.timeout_seconds > s.job_timeout_seconds:
            raise InvalidRequest(f"timeout_seconds must be at most {s.job_timeout_seconds}", "timeout_seconds")
        if body.webhook_events is not None and body.webhook_url is None:
            raise InvalidRequest("webhook_events needs a webhook_url", "webhook_events")
        if body.webhook_url is not None:
            if s.webhook_secret is None:
                raise InvalidRequest("webhooks are not enabled on this server (no signing secret)", "webhook_url")
            try:
                webhooks.check_url(body.webhook_url, s.webhook_allowed_networks)
            except webhooks.WebhookRefused as exc:
                raise InvalidRequest(str(exc), "webhook_url") from None
        return model, params, images

    def submit(self, body: GenerationCreate, idempotency: str | None = None) -> tuple[JobRecord, bool]:
        """Queue a job; returns it and whether it is new (False: an Idempotency-Key replay)."""
        model, params, images = self.resolve(body)
        job_id = uuid.uuid4().hex
        claim = None
        if idempotency is not None:
            claim = idempotency_key(self.settings.key_prefix, hashlib.sha256(idempotency.encode()).hexdigest())
            fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
            ttl = self.settings.job_retention_seconds + self.settings.job_timeout_seconds
            if not self.redis.set(claim, f"{job_id}:{fingerprint}", nx=True, ex=ttl):
                return self._replay(claim, fingerprint), False
        keys = {f"{name}_image": input_key(job_id, name) for name in images}
        try:
            for name, image in images.items():  # inputs land before the job that reads them
                self.storage.put(keys[f"{name}_image"], inputs.to_png(image))
            return self._enqueue(job_id, model, params.model_copy(update=keys), body), True
        except BaseException:
            if images:
                self.storage.delete_job(job_id)
            if claim is not None:
                self.redis.delete(claim)  # the key never created a job: let a retry use it
            raise

    def _replay(self, claim: str, fingerprint: str) -> JobRecord:
        raw = self.redis.get(claim)
        if raw is None:
            raise Conflict("the Idempotency-Key is being released after a failed submit; retry", "Idempotency-Key")
        job_id, _, stored = raw.decode().partition(":")  # type: ignore[union-attr]
        if stored != fingerprint:
            raise Conflict("this Idempotency-Key was used with a different request body", "Idempotency-Key")
        deadline = time.monotonic() + IDEMPOTENT_WAIT_SECONDS
        while time.monotonic() < deadline:  # a concurrent first request may still be writing it
            record = self.store.get(job_id)
            if record is not None:
                return record
            time.sleep(0.02)
        raise ServiceUnavailable(
            "the first request with this Idempotency-Key did not finish; retry", headers={"Retry-After": "1"}
        )

    def _enqueue(self, job_id: str, model: str, params: GenerationParams, body: GenerationCreate) -> JobRecord:
        if self.depth(model) >= self.settings.max_queue_depth:
            raise QueueFull(
                f"the queue for model {model!r} is full ({self.settings.max_queue_depth} jobs); retry later",
                headers={"Retry-After": str(self.settings.queue_full_retry_after_seconds)},
            )
        created = now()
        start_by = created + body.deadline_seconds if body.deadline_seconds else None
        record = JobRecord(
            id=job_id,
            model=model,
            status=JobStatus.QUEUED,
            params=params,
            created_at=created,
            priority=body.priority,
            start_by=start_by,
            timeout_seconds=body.timeout_seconds,
            progress=Progress.at(Stage.QUEUED, 0, params.num_inference_steps),
            webhook_url=body.webhook_url,
            preview_every=body.stream_previews,
            webhook_events=(body.webhook_events or [WebhookEvent.COMPLETED]) if body.webhook_url else [],
        )
        payload = JobPayload(
            job_id=job_id,
            model=model,
            params=params,
            created_at=created,
            start_by=start_by,
            timeout_seconds=body.timeout_seconds,
            preview_every=body.stream_previews,
        )
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()  # explicit MULTI first: RQ adds its commands to the same transaction
            self.store.create(record, pipe)
            self.queue(model, body.priority).enqueue_call(
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
        log.info(
            "job queued",
            extra={
                "job_id": job_id,
                "model": model,
                "priority": body.priority.value,
                "prompt_sha": prompt_digest(body.prompt),
                "prompt_chars": len(body.prompt),
            },
        )
        return record

    def get(self, job_id: str) -> JobRecord:
        """The job's record, reconciled with RQ and its deadline; NotFound past retention."""
        record = self.store.get(job_id) if JOB_ID_PATTERN.match(job_id) else None
        if record is None:
            raise NotFound(f"no generation {job_id!r} (unknown, or past its retention)", "id")
        if record.status.terminal:
            return record
        return self._reconcile(record)

    def _reconcile(self, record: JobRecord) -> JobRecord:
        if record.status == JobStatus.QUEUED and record.start_by is not None and now() > record.start_by:
            self.expire(record)
            return self.store.get(record.id) or record
        try:
            rq_status = Job.fetch(record.id, connection=self.redis, serializer=JSONSerializer).get_status()
        except NoSuchJobError:
            return record
        if rq_status == RqStatus.FAILED:
            # RQ gave up (a worker died on every retry, or the job crashed outside our handler).
            error = JobError(
                type=JobErrorType.WORKER_LOST,
                message="the worker running this job stopped and its retries are exhausted",
            )
            self.store.fail(record.id, error)
            return self.store.get(record.id) or record
        if rq_status in (RqStatus.QUEUED, RqStatus.SCHEDULED) and record.status == JobStatus.RUNNING:
            # A lost worker's job waits for another worker: show it queued again.
            queued = Progress.at(Stage.QUEUED, 0, record.params.num_inference_steps)
            return record.model_copy(update={"status": JobStatus.QUEUED, "progress": queued})
        return record

    def replay(self, job_id: str) -> JobRecord:
        """Submit the same request again: same model, priority and resolved parameters (seed included)."""
        record = self.get(job_id)
        fields = record.params.model_dump()
        for name in ("init_image", "mask_image", "control_image"):
            if fields[name]:
                fields[name] = base64.b64encode(self.storage.path(fields[name]).read_bytes()).decode()
        body = GenerationCreate(**fields, model=record.model, priority=record.priority)
        return self.submit(body)[0]

    def expire(self, record: JobRecord) -> bool:
        """End a queued job that missed its time-to-start, so it never reaches a GPU."""
        if not self.store.cancel(record.id, CancelReason.DEADLINE, only_queued=True):
            return False
        self._drop_rq_job(record)
        log.info("job missed its start deadline", extra={"job_id": record.id})
        return True

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job (it never runs) or a running one (it stops at the next step boundary)."""
        record = self.get(job_id)
        if record.status.terminal or not self.store.cancel(job_id, CancelReason.CLIENT):
            current = self.store.get(job_id) or record
            raise Conflict(f"the generation already ended: {current.status.value}", "id")
        if record.status == JobStatus.QUEUED:
            self._drop_rq_job(record)
        log.info("job canceled", extra={"job_id": job_id, "was": record.status.value})
        return self.store.get(job_id) or record

    def _drop_rq_job(self, record: JobRecord) -> None:
        self.queue(record.model, record.priority).remove(record.id)
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(record.id, connection=self.redis, serializer=JSONSerializer).delete()

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        """The job's webhook delivery log, oldest first."""
        raw: list[bytes] = self.redis.lrange(webhook_log_key(self.settings.key_prefix, job_id), 0, -1)  # type: ignore[assignment]
        return [json.loads(entry) for entry in raw]

    def delete(self, job_id: str) -> None:
        """Remove a finished job, its events and its images."""
        record = self.get(job_id)
        if not record.status.terminal:
            raise Conflict(f"the generation is {record.status.value}; cancel it before deleting it", "id")
        self.storage.delete_job(job_id)
        self.store.delete(job_id)
        self._drop_rq_job(record)

    def find(self, status: JobStatus | None, limit: int, cursor: str | None) -> tuple[list[JobRecord], str | None]:
        """Jobs newest first, optionally of one status; the cursor is the last returned job's creation time."""
        high = "+inf"
        if cursor:
            try:
                high = f"({float(cursor)!r}"  # exclusive: resume strictly after the last job returned
            except ValueError:
                raise InvalidRequest("malformed cursor", "cursor") from None
        key = index_key(self.settings.key_prefix)
        found: list[JobRecord] = []
        offset = 0
        while len(found) <= limit:
            batch: list[bytes] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                key, high, "-inf", start=offset, num=max(limit * 2, 50)
            )
            if not batch:
                break
            offset += len(batch)
            for member in batch:
                record = self.store.get(member.decode())
                if record is None:
                    self.redis.zrem(key, member)  # past retention
                    offset -= 1
                elif status is None or record.status == status:
                    found.append(record)
        page = found[:limit]
        return page, (repr(page[-1].created_at) if len(found) > limit else None)

    def queue_position(self, record: JobRecord) -> int | None:
        """Jobs ahead of this one: all jobs of higher priority, then those ahead in its own queue."""
        if record.status != JobStatus.QUEUED:
            return None
        own = self.queue(record.model, record.priority).get_job_position(record.id)
        if own is None:
            return None
        ahead = PRIORITIES[: PRIORITIES.index(record.priority.value)]
        return own + sum(self.queue(record.model, p).count for p in ahead)

    def running(self, model: str) -> list[JobRecord]:
        """Records of the model's jobs that workers are running now."""
        ids: list[str] = []
        for priority in PRIORITIES:
            ids += StartedJobRegistry(queue=self.queue(model, priority)).get_job_ids(cleanup=False)
        records = [self.store.get(i) for i in ids]
        return [r for r in records if r is not None and r.status == JobStatus.RUNNING]

    def estimate(self, record: JobRecord, position: int | None) -> tuple[float, float] | None:
        """Estimated (start, finish) of a queued job; None before the model has measurements."""
        if record.status != JobStatus.QUEUED:
            return None
        return eta.estimate(
            self.redis,
            self.settings.key_prefix,
            record,
            position,
            self.running(record.model),
            self.ready_workers(record.model),
        )

    def ready_workers(self, model: str) -> int:
        """Workers currently registered on the model's queue (they register only once warm)."""
        return len(Worker.all(queue=self.queue(model)))
