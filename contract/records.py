"""Our job record in Redis: one hash per job, changed only through guarded status transitions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from redis import Redis
from redis.client import Pipeline

from contract.jobs import ImageRecord, JobError, JobRecord, JobStatus, Progress, now
from contract.queues import job_key

# KEYS[1] = job hash; ARGV[1] = JSON list of statuses the job may move from, ARGV[2] = TTL seconds
# (0 = keep), ARGV[3] = field to increment by one ("" for none), ARGV[4..] = field/value pairs.
# One atomic step, so a worker finishing a job can never overwrite a status another process ended.
_TRANSITION = """
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw then return 0 end
local status = cjson.decode(raw)
local allowed = cjson.decode(ARGV[1])
local ok = false
for _, s in ipairs(allowed) do if s == status then ok = true end end
if not ok then return -1 end
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[3], 1) end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


def _encode(record: JobRecord) -> dict[str, str]:
    data = record.model_dump(mode="json")
    return {name: json.dumps(value) for name, value in data.items()}


class JobStore:
    """Reads and writes job records; shared by the API (create, read) and workers (progress, finish)."""

    def __init__(self, redis: Redis, prefix: str, retention_seconds: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention_seconds = retention_seconds
        self._transition = redis.register_script(_TRANSITION)

    def key(self, job_id: str) -> str:
        """Redis key of one job's record."""
        return job_key(self.prefix, job_id)

    def create(self, record: JobRecord, pipe: Pipeline) -> None:
        """Queue the write of a new record in `pipe`, so it lands together with the RQ enqueue or not at all."""
        pipe.hset(self.key(record.id), mapping=_encode(record))  # type: ignore[arg-type]

    def get(self, job_id: str) -> JobRecord | None:
        """The record, or None once it is unknown or past retention."""
        raw: Mapping[bytes, bytes] = self.redis.hgetall(self.key(job_id))  # type: ignore[assignment]
        if not raw or b"status" not in raw:
            return None
        return JobRecord.model_validate({k.decode(): json.loads(v) for k, v in raw.items()})

    def transition(
        self,
        job_id: str,
        allowed_from: Iterable[JobStatus],
        fields: Mapping[str, Any],
        *,
        ttl_seconds: int = 0,
        increment: str = "",
    ) -> bool:
        """Set `fields` if the job's status is one of `allowed_from`; returns whether it did."""
        args: list[str | int] = [json.dumps([s.value for s in allowed_from]), ttl_seconds, increment]
        for name, value in fields.items():
            args += [name, json.dumps(value)]
        return bool(self._transition(keys=[self.key(job_id)], args=args) == 1)

    def mark_running(self, job_id: str, worker: str, total_steps: int) -> bool:
        """A worker took the job (again, after a lost worker); counts the attempt."""
        fields = {
            "status": JobStatus.RUNNING.value,
            "started_at": now(),
            "worker": worker,
            "progress": Progress(step=0, total_steps=total_steps).model_dump(),
        }
        return self.transition(job_id, ACTIVE, fields, increment="attempts")

    def set_progress(self, job_id: str, step: int, total_steps: int) -> bool:
        """Record denoising progress; ignored unless the job is still running."""
        progress = Progress(step=step, total_steps=total_steps).model_dump()
        return self.transition(job_id, (JobStatus.RUNNING,), {"progress": progress})

    def succeed(self, job_id: str, images: list[ImageRecord]) -> bool:
        """End the job with its stored images; starts the retention clock."""
        fields = {
            "status": JobStatus.SUCCEEDED.value,
            "finished_at": now(),
            "images": [image.model_dump() for image in images],
        }
        return self.transition(job_id, ACTIVE, fields, ttl_seconds=self.retention_seconds)

    def fail(self, job_id: str, error: JobError) -> bool:
        """End the job with an error a client may read; starts the retention clock."""
        fields = {
            "status": JobStatus.FAILED.value,
            "finished_at": now(),
            "error": error.model_dump(mode="json"),
        }
        return self.transition(job_id, ACTIVE, fields, ttl_seconds=self.retention_seconds)
