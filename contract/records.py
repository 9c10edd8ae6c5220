"""Our job record in Redis: one hash per job, changed only through guarded status transitions.

Every change also appends the job's new state to its event stream, in the same atomic step, so
polling, SSE and webhooks all see one sequence of states and a reconnecting client can resume
from any event id without losing the terminal one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from redis import Redis
from redis.client import Pipeline

from contract.jobs import (
    CancelReason,
    ImageRecord,
    JobError,
    JobRecord,
    JobStatus,
    Progress,
    Stage,
    now,
)
from contract.keys import deadlines_key, events_key, index_key, job_key, webhook_stream_key

# KEYS[1] = job hash, KEYS[2] = event stream, KEYS[3] = webhook stream; ARGV[1] = JSON list of statuses the job may move
# from, ARGV[2] = TTL seconds (0 = keep), ARGV[3] = field to increment ("" for none),
# ARGV[4] = max events kept, ARGV[5..] = field/value pairs (values JSON).
_TRANSITION = """
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw then return 0 end
local status = cjson.decode(raw)
local allowed = cjson.decode(ARGV[1])
local ok = false
for _, s in ipairs(allowed) do if s == status then ok = true end end
if not ok then return -1 end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[3], 1) end
local names = {'status', 'progress', 'error', 'cancel_reason', 'started_at', 'finished_at', 'attempts'}
local values = redis.call('HMGET', KEYS[1], unpack(names))
local parts = {}
for i, name in ipairs(names) do
  if values[i] then table.insert(parts, '"' .. name .. '":' .. values[i]) end
end
for i = 5, #ARGV, 2 do  -- a preview image rides only on the event that brought it
  if ARGV[i] == 'preview' then table.insert(parts, '"preview":' .. ARGV[i + 1]) end
end
local state = '{' .. table.concat(parts, ',') .. '}'
local event_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'state', state)
local hook = redis.call('HGET', KEYS[1], 'webhook_url')
if hook and hook ~= 'null' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', 'job', KEYS[1], 'event', event_id, 'state', state)
end
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1
"""

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
MAX_EVENTS = 1000


def _encode(record: JobRecord) -> dict[str, str]:
    data = record.model_dump(mode="json")
    return {name: json.dumps(value) for name, value in data.items()}


def _decode(raw: Mapping[bytes, bytes]) -> JobRecord | None:
    if not raw or b"status" not in raw:
        return None
    return JobRecord.model_validate({k.decode(): json.loads(v) for k, v in raw.items()})


class JobStore:
    """Reads and writes job records; shared by the API (create, read, cancel) and workers (progress, finish)."""

    def __init__(self, redis: Redis, prefix: str, retention_seconds: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention_seconds = retention_seconds
        self._transition = redis.register_script(_TRANSITION)

    def key(self, job_id: str) -> str:
        """Redis key of one job's record."""
        return job_key(self.prefix, job_id)

    def events(self, job_id: str) -> str:
        """Redis key of one job's event stream."""
        return events_key(self.prefix, job_id)

    def create(self, record: JobRecord, pipe: Pipeline) -> None:
        """Queue the write of a new record, its first event and its index entry in `pipe` (one transaction)."""
        pipe.hset(self.key(record.id), mapping=_encode(record))  # type: ignore[arg-type]
        state = {
            "status": record.status.value,
            "progress": record.progress.model_dump(mode="json") if record.progress else None,
            "attempts": 0,
        }
        pipe.xadd(self.events(record.id), {"state": json.dumps(state)}, maxlen=MAX_EVENTS, approximate=True)
        pipe.zadd(index_key(self.prefix), {record.id: record.created_at})
        if record.start_by is not None:
            pipe.zadd(deadlines_key(self.prefix), {record.id: record.start_by})

    def get(self, job_id: str) -> JobRecord | None:
        """The record, or None once it is unknown or past retention."""
        return _decode(self.redis.hgetall(self.key(job_id)))  # type: ignore[arg-type]

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        """Records of several jobs in one round trip (None where unknown or past retention)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.key(job_id))
            return [_decode(raw) for raw in pipe.execute()]

    def transition(
        self,
        job_id: str,
        allowed_from: Iterable[JobStatus],
        fields: Mapping[str, Any],
        *,
        ttl_seconds: int = 0,
        increment: str = "",
    ) -> bool:
        """Set `fields` (and append an event) if the job's status is one of `allowed_from`."""
        args: list[str | int] = [json.dumps([s.value for s in allowed_from]), ttl_seconds, increment, MAX_EVENTS]
        for name, value in fields.items():
            args += [name, json.dumps(value)]
        keys = [self.key(job_id), self.events(job_id), webhook_stream_key(self.prefix)]
        return bool(self._transition(keys=keys, args=args) == 1)

    def mark_running(self, job_id: str, worker: str, total_steps: int) -> bool:
        """A worker took the job (again, after a lost worker); counts the attempt."""
        fields = {
            "status": JobStatus.RUNNING.value,
            "started_at": now(),
            "worker": worker,
            "progress": Progress.at(Stage.LOADING, 0, total_steps).model_dump(mode="json"),
        }
        return self.transition(job_id, ACTIVE, fields, increment="attempts")

    def set_progress(self, job_id: str, progress: Progress, preview: str | None = None) -> bool:
        """Record progress (and a preview data URL); False once the job is no longer running: the worker stops."""
        fields: dict[str, Any] = {"progress": progress.model_dump(mode="json")}
        if preview is not None:
            fields["preview"] = preview
        return self.transition(job_id, (JobStatus.RUNNING,), fields)

    def succeed(self, job_id: str, images: list[ImageRecord], total_steps: int) -> bool:
        """End the job with its stored images; starts the retention clock."""
        fields = {
            "status": JobStatus.SUCCEEDED.value,
            "finished_at": now(),
            "images": [image.model_dump() for image in images],
            "progress": Progress.at(Stage.DONE, total_steps, total_steps).model_dump(mode="json"),
        }
        return self.transition(job_id, (JobStatus.RUNNING,), fields, ttl_seconds=self.retention_seconds)

    def fail(self, job_id: str, error: JobError) -> bool:
        """End the job with an error a client may read; starts the retention clock."""
        fields = {"status": JobStatus.FAILED.value, "finished_at": now(), "error": error.model_dump(mode="json")}
        return self.transition(job_id, ACTIVE, fields, ttl_seconds=self.retention_seconds)

    def cancel(self, job_id: str, reason: CancelReason, only_queued: bool = False) -> bool:
        """End a queued or running job as canceled; a running one stops at its next step boundary."""
        fields = {"status": JobStatus.CANCELED.value, "finished_at": now(), "cancel_reason": reason.value}
        allowed = (JobStatus.QUEUED,) if only_queued else ACTIVE
        return self.transition(job_id, allowed, fields, ttl_seconds=self.retention_seconds)

    def note_stop(self, job_id: str, progress: Progress) -> bool:
        """After a cancel, record the step at which the worker actually stopped."""
        return self.transition(job_id, (JobStatus.CANCELED,), {"progress": progress.model_dump(mode="json")})

    def delete(self, job_id: str) -> None:
        """Remove the record, its events and its index entry."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self.key(job_id), self.events(job_id))
            pipe.zrem(index_key(self.prefix), job_id)
            pipe.execute()
