"""Generation jobs on the API side: submit, read, cancel, delete, list and replay.

Holds no per-request state. Resolution (defaults, limits, inputs) is `app.resolution`; RQ is
`app.queue`; our record is `contract.records.JobStore`; images are a `contract.storage.Storage`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import uuid

from redis import Redis

from app import inputs
from app.auth import Caller
from app.errors import Conflict, InvalidRequest, NotFound, QueueFull
from app.idempotency import Idempotency
from app.queue import JobQueue
from app.quotas import Quotas
from app.resolution import Resolved, Resolver
from app.schemas import GenerationCreate
from app.settings import ApiSettings
from contract.failpoints import failpoint
from contract.jobs import CancelReason, JobPayload, JobRecord, JobStatus, Progress, Stage, WebhookEvent, now
from contract.keys import index_key
from contract.logs import prompt_digest
from contract.records import JobStore
from contract.storage import JOB_ID_PATTERN, Storage, StorageError, input_key
from contract.tracing import Tracing

log = logging.getLogger(__name__)

INPUT_FIELDS = ("init_image", "mask_image", "control_image")


class JobService:
    """Everything the routes do with jobs."""

    def __init__(
        self,
        redis: Redis,
        settings: ApiSettings,
        storage: Storage,
        queue: JobQueue,
        resolver: Resolver,
        quotas: Quotas,
    ) -> None:
        self.redis, self.settings, self.storage = redis, settings, storage
        self.queue, self.resolver, self.quotas = queue, resolver, quotas
        self.store = JobStore(redis, settings.key_prefix, settings.job_retention_seconds)
        ttl = settings.job_retention_seconds + settings.job_timeout_seconds
        self.idempotency = Idempotency(redis, settings.key_prefix, ttl, self.store.get)
        self.tracing = Tracing.open(settings.otlp_endpoint, "diffusion-api")

    def submit(self, body: GenerationCreate, caller: Caller, idempotency: str | None = None) -> tuple[JobRecord, bool]:
        """Queue a job for `caller`; returns it and whether it is new (False: an Idempotency-Key replay).
        Idempotency-Keys are the caller's own: another key's same string is another job."""
        self.quotas.admit_request(caller)
        resolved = self.resolver.resolve(body)
        job_id = uuid.uuid4().hex
        scope = caller.name or ""
        if idempotency is not None:
            earlier = self.idempotency.claim(scope, idempotency, body.model_dump_json(), job_id)
            if earlier is not None:
                return earlier, False
        try:
            self.quotas.reserve_job(caller, job_id)
            with self.tracing.span("submit", **{"diffusion.job_id": job_id, "diffusion.model": resolved.model}):
                return self._create(job_id, resolved, body, caller), True
        except BaseException:
            self.quotas.release_job(caller, job_id)
            if resolved.images:
                with contextlib.suppress(StorageError):  # the store may be what failed; retention sweeps orphans
                    self.storage.delete_job(job_id)
            if idempotency is not None:
                self.idempotency.release(scope, idempotency)
            raise

    def _create(self, job_id: str, resolved: Resolved, body: GenerationCreate, caller: Caller) -> JobRecord:
        model, max_depth = resolved.model, self.settings.max_queue_depth
        if self.queue.depth(model) >= max_depth:
            raise QueueFull(
                f"the queue for model {model!r} is full ({max_depth} jobs); retry later",
                headers={"Retry-After": str(self.settings.queue_full_retry_after_seconds)},
            )
        keys = {f"{name}_image": input_key(job_id, name) for name in resolved.images}
        for name, image in resolved.images.items():  # inputs land before the job that reads them
            self.storage.put(keys[f"{name}_image"], inputs.to_png(image), "image/png")
        params = resolved.params.model_copy(update=keys)
        created = now()
        start_by = created + body.deadline_seconds if body.deadline_seconds else None
        events = (body.webhook_events or [WebhookEvent.COMPLETED]) if body.webhook_url else []
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
            webhook_events=events,
            preview_every=body.stream_previews,
            batch_key=params.batch_key(),
            owner=caller.owner,
        )
        payload = JobPayload(
            job_id=job_id,
            model=model,
            params=params,
            created_at=created,
            start_by=start_by,
            timeout_seconds=body.timeout_seconds,
            preview_every=body.stream_previews,
            priority=body.priority,
            trace=self.tracing.carrier(),  # the submit span's context: the worker's spans continue its trace
        )
        failpoint("before_enqueue")
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()  # explicit MULTI first: RQ adds its commands to the same transaction
            self.store.create(record, pipe)
            self.queue.enqueue(payload, body.priority, pipe)
            pipe.execute()
        failpoint("after_enqueue")
        log.info(
            "job queued",
            extra={
                "job_id": job_id,
                "model": model,
                "key": caller.name,
                "priority": body.priority.value,
                "prompt_sha": prompt_digest(body.prompt),
                "prompt_chars": len(body.prompt),
            },
        )
        return record

    def get(self, job_id: str, caller: Caller) -> JobRecord:
        """The job's record; NotFound when unknown, past retention, or another caller's. Never writes."""
        record = self.store.get(job_id) if JOB_ID_PATTERN.match(job_id) else None
        if record is None or not caller.may_see(record.owner):
            raise NotFound(f"no generation {job_id!r} (unknown, or past its retention)", "id")
        return record

    def replay(self, job_id: str, caller: Caller) -> JobRecord:
        """Submit the same request again: same model, priority and resolved parameters (seed included)."""
        record = self.get(job_id, caller)
        fields = record.params.model_dump()
        for name in INPUT_FIELDS:
            if fields[name]:
                fields[name] = base64.b64encode(self.storage.get(fields[name])).decode()
        body = GenerationCreate(**fields, model=record.model, priority=record.priority)
        return self.submit(body, caller)[0]

    def expire(self, record: JobRecord) -> bool:
        """End a queued job that missed its time-to-start, so it never reaches a GPU."""
        if not self.store.cancel(record.id, CancelReason.DEADLINE, only_queued=True):
            return False
        self.queue.remove(record.id, record.model, record.priority)
        log.info("job missed its start deadline", extra={"job_id": record.id})
        return True

    def cancel(self, job_id: str, caller: Caller) -> JobRecord:
        """Cancel a queued job (it never runs) or a running one (it stops at the next step boundary)."""
        record = self.get(job_id, caller)
        if record.status.terminal or not self.store.cancel(job_id, CancelReason.CLIENT):
            current = self.store.get(job_id) or record
            raise Conflict(f"the generation already ended: {current.status.value}", "id")
        if record.status == JobStatus.QUEUED:
            self.queue.remove(job_id, record.model, record.priority)
        log.info("job canceled", extra={"job_id": job_id, "was": record.status.value})
        return self.store.get(job_id) or record

    def delete(self, job_id: str, caller: Caller) -> None:
        """Remove a finished job, its events and its images."""
        record = self.get(job_id, caller)
        if not record.status.terminal:
            raise Conflict(f"the generation is {record.status.value}; cancel it before deleting it", "id")
        self.storage.delete_job(job_id)
        self.store.delete(record)
        self.queue.remove(job_id, record.model, record.priority)

    def find(
        self, caller: Caller, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs newest first: the caller's own (every job for an admin), optionally of one status (each
        owner and status has its own index, so a filter reads only its own jobs); the cursor is the last
        returned job's creation time."""
        owner = None if caller.admin else caller.name
        high = "+inf"
        if cursor:
            try:
                high = f"({float(cursor)!r}"  # exclusive: resume strictly after the last job returned
            except ValueError:
                raise InvalidRequest("malformed cursor", "cursor") from None
        key = index_key(self.settings.key_prefix, owner, status.value if status else None)
        found: list[JobRecord] = []
        offset = 0
        while len(found) <= limit:
            batch: list[bytes] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                key, high, "-inf", start=offset, num=limit + 1 - len(found)
            )
            if not batch:
                break
            offset += len(batch)
            for record in self.store.get_many(m.decode() for m in batch):
                # Past retention (swept later), or moved on since the index was read: not part of this page.
                if record is not None and (status is None or record.status == status):
                    found.append(record)
        page = found[:limit]
        return page, (repr(page[-1].created_at) if len(found) > limit else None)
