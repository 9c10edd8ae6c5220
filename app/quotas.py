"""Per-key quotas, shared by every API replica through Redis: job-creating requests per minute (a sliding
window, exact at any instant) and jobs queued or running at once. Past either: 429 `rate_limited` with
`Retry-After`, and nothing is queued."""

from __future__ import annotations

import uuid

from redis import Redis

from app.auth import Caller
from app.errors import RateLimited
from contract.keys import active_jobs_key, request_log_key

WINDOW_MS = 60_000

# KEYS[1] = the key's request log (sorted set, scored by Redis server time in ms).
# ARGV[1] = limit, ARGV[2] = window ms, ARGV[3] = a unique member. Returns 0 (admitted) or the ms
# until the oldest request leaves the window.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

# KEYS[1] = the key's active set; ARGV[1] = limit, ARGV[2] = job id. 1 when the slot is taken.
_RESERVE = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
return 1
"""


class Quotas:
    """The two limits of API keys; callers without a name (auth off) have none."""

    def __init__(self, redis: Redis, prefix: str, active_retry_after_seconds: int) -> None:
        self.redis, self.prefix = redis, prefix
        self.active_retry_after_seconds = active_retry_after_seconds
        self._admit = redis.register_script(_ADMIT)
        self._reserve = redis.register_script(_RESERVE)

    def admit_request(self, caller: Caller) -> None:
        """Count a job-creating request; RateLimited when the key made its limit in the last minute."""
        if caller.name is None or caller.requests_per_minute <= 0:
            return
        key = request_log_key(self.prefix, caller.name)
        wait_ms = int(self._admit(keys=[key], args=[caller.requests_per_minute, WINDOW_MS, uuid.uuid4().hex]))
        if wait_ms:
            raise RateLimited(
                f"API key {caller.name!r} made {caller.requests_per_minute} job requests in the last minute",
                headers={"Retry-After": str(max(1, -(-wait_ms // 1000)))},
            )

    def reserve_job(self, caller: Caller, job_id: str) -> None:
        """Take one of the key's active-job slots for a new job; RateLimited when all are taken."""
        if caller.name is None:
            return
        key = active_jobs_key(self.prefix, caller.name)
        if caller.max_active_jobs <= 0:
            self.redis.sadd(key, job_id)
            return
        if not self._reserve(keys=[key], args=[caller.max_active_jobs, job_id]):
            raise RateLimited(
                f"API key {caller.name!r} has {caller.max_active_jobs} jobs queued or running; retry when one ends",
                headers={"Retry-After": str(self.active_retry_after_seconds)},
            )

    def release_job(self, caller: Caller, job_id: str) -> None:
        """Give a slot back (a submit that did not create its job)."""
        if caller.name is not None:
            self.redis.srem(active_jobs_key(self.prefix, caller.name), job_id)
