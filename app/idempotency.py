"""Idempotency-Key: the same key with the same body returns the same job and never runs it twice."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from redis import Redis

from app.errors import Conflict, ServiceUnavailable
from contract.jobs import JobRecord
from contract.keys import idempotency_key

# A concurrent first request with the same key may still be writing its job.
WAIT_FOR_FIRST_SECONDS = 5.0


class Idempotency:
    """Claims of Idempotency-Keys in Redis, shared by every API replica, kept `ttl_seconds`."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int, read: Callable[[str], JobRecord | None]) -> None:
        self.redis, self.prefix, self.ttl_seconds, self.read = redis, prefix, ttl_seconds, read

    def _key(self, scope: str, key: str) -> str:
        return idempotency_key(self.prefix, hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest())

    def claim(self, scope: str, key: str, body_json: str, job_id: str) -> JobRecord | None:
        """None when this request now owns the key (it creates `job_id`); else the job the key already made.

        Raises Conflict when the key came with another body.
        """
        fingerprint = hashlib.sha256(body_json.encode()).hexdigest()
        claim = self._key(scope, key)
        if self.redis.set(claim, f"{job_id}:{fingerprint}", nx=True, ex=self.ttl_seconds):
            return None
        raw = self.redis.get(claim)
        if raw is None:
            raise Conflict("the Idempotency-Key is being released after a failed submit; retry", "Idempotency-Key")
        existing, _, stored = raw.decode().partition(":")  # type: ignore[union-attr]
        if stored != fingerprint:
            raise Conflict("this Idempotency-Key was used with a different request body", "Idempotency-Key")
        deadline = time.monotonic() + WAIT_FOR_FIRST_SECONDS
        while time.monotonic() < deadline:
            record = self.read(existing)
            if record is not None:
                return record
            time.sleep(0.02)
        raise ServiceUnavailable(
            "the first request with this Idempotency-Key did not finish; retry", headers={"Retry-After": "1"}
        )

    def release(self, scope: str, key: str) -> None:
        """Give the key up after a submit that created nothing, so a retry can use it."""
        self.redis.delete(self._key(scope, key))
