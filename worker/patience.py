"""Riding out a Redis outage: retry an operation while Redis is unreachable, for a bounded time.

Redis restarting (a crash, a failover, an upgrade) takes seconds; a worker that gave up on every
Redis error in that window would drop the jobs it holds. Connection and timeout errors are retried
with backoff up to `patience_seconds`; any other error is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")
PATIENCE_SECONDS = 300.0


def redis_patient(operation: Callable[[], T], what: str, patience_seconds: float = PATIENCE_SECONDS) -> T:
    """`operation()`, retried while Redis is unreachable (at most `patience_seconds`)."""
    deadline = time.monotonic() + patience_seconds
    delay = 0.2
    while True:
        try:
            return operation()
        except (RedisConnectionError, RedisTimeoutError):
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unreachable; retrying", extra={"operation": what, "in_seconds": delay})
            time.sleep(delay)
            delay = min(5.0, delay * 2)
