"""Our job record in Redis: one hash per job, changed only through guarded status transitions.

Every change also appends the job's new state to its event stream, in the same atomic step, so
polling, SSE and webhooks all see one sequence of states and a reconnecting client can resume
from any event id without losing the terminal one.
"""

from __future__ import annotations

import json
import logging
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
from contract.keys import active_jobs_key, deadlines_key, events_key, index_key, job_key, webhook_stream_key

# KEYS[1] = job hash, KEYS[2] = its event stream, KEYS[3] = the webhook stream.
# ARGV[1] = JSON list of statuses the job may move from, ARGV[2] = TTL seconds (0 = keep), ARGV[3] = field to
# increment ("" for none), ARGV[4] = max events kept, ARGV[5] = the attempt that must hold the job ("" = any),
# ARGV[6] = key prefix, ARGV[7] = job id, ARGV[8..] = field/value pairs (values JSON).
# Returns 0 (no such job), -1 (status not allowed), -2 (another attempt holds the job), else 1 or the
# incremented value. Index key names mirror contract.keys.index_key and active_jobs_key.
_TRANSITION = """
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw then return 0 end
local status = cjson.decode(raw)
local ok = false
for _, s in ipairs(cjson.decode(ARGV[1])) do if s == status then ok = true end end
if not ok then return -1 end
if ARGV[5] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') ~= tonumber(ARGV[5]) then
  return -2
end
if #ARGV > 8 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
local result = 1
if ARGV[3] ~= '' then result = redis.call('HINCRBY', KEYS[1], ARGV[3], 1) end
local new = cjson.decode(redis.call('HGET', KEYS[1], 'status'))
if new ~= status then
  local prefix, id = ARGV[6], ARGV[7]
  local created = tonumber(redis.call('HGET', KEYS[1], 'created_at'))
  local owner = cjson.decode(redis.call('HGET', KEYS[1], 'owner') or 'null')
  redis.call('ZREM', prefix .. ':jobs:status:' .. status, id)
  redis.call('ZADD', prefix .. ':jobs:status:' .. new, created, id)
  if owner ~= cjson.null then
    local own = prefix .. ':jobs:owner:' .. owner .. ':status:'
    redis.call('ZREM', own .. status, id)
    redis.call('ZADD', own .. new, created, id)
    if new == 'succeeded' or new == 'failed' or new == 'canceled' then
      redis.call('SREM', prefix .. ':active:' .. owner, id)
    end
  end
end
local names = {'status', 'progress', 'error', 'cancel_reason', 'started_at', 'finished_at', 'attempts'}
local values = redis.call('HMGET', KEYS[1], unpack(names))
local parts = {}
for i, name in ipairs(names) do
  if values[i] then table.insert(parts, '"' .. name .. '":' .. values[i]) end
end
for i = 8, #ARGV, 2 do  -- a preview image rides only on the event that brought it
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
return result
"""

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
MAX_EVENTS = 1000


def _encode(record: JobRecord) -> dict[str, str]:
    data = record.model_dump(mode="json")
    return {name: json.dumps(value) for name, value in data.items()}


def _decode(raw: Mapping[bytes, bytes]) -> JobRecord | None:
    if not raw or b"status" not in raw:
        return None
    try:
        return JobRecord.model_validate({k.decode(): json.loads(v) for k, v in raw.items()})
    except ValueError:  # a record this version cannot read (ValidationError, bad JSON): unreadable, not fatal
        log.error("unreadable job record", extra={"fields": sorted(k.decode() for k in raw)})
        return None


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
        """Queue the write of a new record, its first event and its index entries in `pipe` (one transaction)."""
        pipe.hset(self.key(record.id), mapping=_encode(record))  # type: ignore[arg-type]
        state = {
            "status": record.status.value,
            "progress": record.progress.model_dump(mode="json") if record.progress else None,
            "attempts": 0,
        }
        pipe.xadd(self.events(record.id), {"state": json.dumps(state)}, maxlen=MAX_EVENTS, approximate=True)
        owners = [None] if record.owner is None else [None, record.owner]
        for owner in owners:
            pipe.zadd(index_key(self.prefix, owner), {record.id: record.created_at})
            pipe.zadd(index_key(self.prefix, owner, record.status.value), {record.id: record.created_at})
        if record.owner is not None:
            pipe.sadd(active_jobs_key(self.prefix, record.owner), record.id)
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
        attempt: int | None = None,
    ) -> int:
        """Set `fields` (and append an event) if the job's status is one of `allowed_from` and, when `attempt`
        is given, that attempt still holds the job. Returns the script's answer (see _TRANSITION)."""
        args: list[str | int] = [
            json.dumps([s.value for s in allowed_from]),
            ttl_seconds,
            increment,
            MAX_EVENTS,
            "" if attempt is None else attempt,
            self.prefix,
            job_id,
        ]
        for name, value in fields.items():
            args += [name, json.dumps(value)]
        keys = [self.key(job_id), self.events(job_id), webhook_stream_key(self.prefix)]
        return int(self._transition(keys=keys, args=args))

    def mark_running(self, job_id: str, worker: str, total_steps: int) -> int | None:
        """A worker took the job (again, after a lost worker): the number of this attempt, or None when the job
        may not run (canceled, finished or deleted). Every later write of the attempt is fenced with it."""
        fields = {
            "status": JobStatus.RUNNING.value,
            "started_at": now(),
            "worker": worker,
            "progress": Progress.at(Stage.LOADING, 0, total_steps).model_dump(mode="json"),
        }
        attempt = self.transition(job_id, ACTIVE, fields, increment="attempts")
        return attempt if attempt > 0 else None

    def set_progress(self, job_id: str, progress: Progress, attempt: int, preview: str | None = None) -> int:
        """Record progress (and a preview data URL). 1 while the attempt may go on; -1 once the job left
        `running` (canceled), -2 once another attempt holds it, 0 once it is gone: the worker stops."""
        fields: dict[str, Any] = {"progress": progress.model_dump(mode="json")}
        if preview is not None:
            fields["preview"] = preview
        return self.transition(job_id, (JobStatus.RUNNING,), fields, attempt=attempt)

    def succeed(self, job_id: str, images: list[ImageRecord], total_steps: int, attempt: int) -> bool:
        """End the job with its stored images (only if `attempt` still holds it); starts the retention clock."""
        fields = {
            "status": JobStatus.SUCCEEDED.value,
            "finished_at": now(),
            "images": [image.model_dump() for image in images],
            "progress": Progress.at(Stage.DONE, total_steps, total_steps).model_dump(mode="json"),
        }
        ttl = self.retention_seconds
        return self.transition(job_id, (JobStatus.RUNNING,), fields, ttl_seconds=ttl, attempt=attempt) == 1

    def fail(self, job_id: str, error: JobError, attempt: int | None = None) -> bool:
        """End the job with an error a client may read (fenced when `attempt` is given); starts retention."""
        fields = {"status": JobStatus.FAILED.value, "finished_at": now(), "error": error.model_dump(mode="json")}
        return self.transition(job_id, ACTIVE, fields, ttl_seconds=self.retention_seconds, attempt=attempt) == 1

    def requeue(self, job_id: str, attempt: int | None = None) -> bool:
        """The job's worker stopped or died and RQ queued it again: show it queued until another attempt starts."""
        record = self.get(job_id)
        steps = record.params.num_inference_steps if record else 0
        fields = {"status": JobStatus.QUEUED.value, "progress": Progress.at(Stage.QUEUED, 0, steps).model_dump()}
        return self.transition(job_id, (JobStatus.RUNNING,), fields, attempt=attempt) == 1

    def cancel(self, job_id: str, reason: CancelReason, only_queued: bool = False) -> bool:
        """End a queued or running job as canceled; a running one stops at its next step boundary."""
        fields = {"status": JobStatus.CANCELED.value, "finished_at": now(), "cancel_reason": reason.value}
        allowed = (JobStatus.QUEUED,) if only_queued else ACTIVE
        return self.transition(job_id, allowed, fields, ttl_seconds=self.retention_seconds) == 1

    def note_stop(self, job_id: str, progress: Progress, attempt: int) -> bool:
        """After a cancel, record the step at which the worker actually stopped."""
        fields = {"progress": progress.model_dump(mode="json")}
        return self.transition(job_id, (JobStatus.CANCELED,), fields, attempt=attempt) == 1

    def delete(self, record: JobRecord) -> None:
        """Remove the record, its events and its index entries."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self.key(record.id), self.events(record.id))
            for owner in [None] if record.owner is None else [None, record.owner]:
                pipe.zrem(index_key(self.prefix, owner), record.id)
                pipe.zrem(index_key(self.prefix, owner, record.status.value), record.id)
            pipe.execute()
