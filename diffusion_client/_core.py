"""What the sync and async clients share: configuration, request bodies, deadlines and the retry policy.

Retries go through tenacity: jittered exponential backoff for connection failures, the server's
`Retry-After` (plus a little jitter) for 429 and 503. Every wait is capped by the caller's deadline,
and a `Retry-After` longer than the time left is not waited for at all: the error is raised at once.
"""

from __future__ import annotations

import base64
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import tenacity

from diffusion_client.errors import APIConnectionError, APIError, APITimeoutError, UnknownAPIError
from diffusion_client.resources import GenerationParams, ImageInput, Job

VERSION = "0.1.0"
DEFAULT_URL = "http://127.0.0.1:8000"
# The service sends a keep-alive comment every 15 s on an idle event stream: a read silent for this
# long means a dead connection, which is then re-opened with Last-Event-ID.
SSE_READ_TIMEOUT_SECONDS = 60.0
# A Retry-After longer than this (an hourly quota, say) is raised to the caller rather than slept through.
MAX_RETRY_AFTER_SECONDS = 60.0
IMAGE_FIELDS = ("init_image", "mask_image", "control_image")


@dataclass(frozen=True)
class Config:
    """Where the service is, what every request carries, and how hard to try."""

    base_url: str
    headers: dict[str, str]
    timeout: float
    max_retries: int


def resolve_config(
    base_url: str | None, api_key: str | None, timeout: float, max_retries: int, headers: dict[str, str] | None
) -> Config:
    """Arguments first, then `$DIFFUSION_URL` and `$DIFFUSION_API_KEY`, then the defaults."""
    base = (base_url or os.environ.get("DIFFUSION_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("DIFFUSION_API_KEY")
    merged = {"User-Agent": f"diffusion-client/{VERSION}", **(headers or {})}
    if key:
        merged["Authorization"] = f"Bearer {key}"
    return Config(base, merged, timeout, max_retries)


class Deadline:
    """A point in time (monotonic clock) that waits and timeouts must not pass; None = no deadline."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never negative), None without a deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.at is not None and time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """`seconds`, or the time left if that is shorter."""
        left = self.remaining()
        return seconds if left is None else max(0.001, min(seconds, left))

    def timeout(self, seconds: float, read: float | None = None) -> httpx.Timeout:
        """An httpx timeout whose every phase ends by the deadline."""
        return httpx.Timeout(self.cap(seconds), read=self.cap(read if read is not None else seconds))


class StreamDropped(Exception):
    """An event stream ended before the job's terminal event (a proxy cut it, the server restarted)."""


def json_of(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; `UnknownAPIError` when it is not JSON (a proxy's page)."""
    try:
        return response.json()
    except ValueError as exc:
        text = response.text.strip()[:200] or "no body"
        raise UnknownAPIError(response.status_code, "unknown", f"the answer is not JSON: {text}") from exc


def last_of(jobs: Iterable[Job]) -> Job:
    """The terminal state of a job's event stream (which ends after it)."""
    job = None
    for job in jobs:
        if job.done:
            return job
    raise StreamDropped("the event stream ended before the job did" if job else "the event stream sent nothing")


def encode_image(value: ImageInput) -> str:
    """bytes or a path: base64; a string is taken as base64 or a data URL already."""
    if isinstance(value, str):
        return value
    data = value if isinstance(value, bytes) else Path(value).read_bytes()
    return base64.b64encode(data).decode("ascii")


def request_body(prompt: str, params: GenerationParams) -> dict[str, Any]:
    """The JSON body of a generation: None values dropped, input images encoded."""
    body: dict[str, Any] = {"prompt": prompt}
    for name, value in params.items():
        if value is None:
            continue
        body[name] = encode_image(cast(ImageInput, value)) if name in IMAGE_FIELDS else value
    return body


def same_origin(url: str, base_url: str) -> bool:
    """True when `url` is relative or on the service's own scheme, host and port."""
    target, base = urlsplit(url), urlsplit(base_url)
    return not target.netloc or (target.scheme, target.netloc) == (base.scheme, base.netloc)


def transport_error(exc: Exception, deadline: Deadline, base_url: str) -> APIConnectionError:
    """The client's exception for an httpx transport failure (or a dropped stream) after the retries."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        what = f"cannot reach the service at {base_url}"
    else:
        what = f"no answer from the service at {base_url}"
    if deadline.expired:
        return APITimeoutError(f"{what} within the {deadline.seconds:g} s timeout: {reason}")
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{what}: {reason}")
    return APIConnectionError(f"{what}: {reason}")


class _DeadlineStop(tenacity.stop.stop_base):
    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.deadline.expired


class _Wait(tenacity.wait.wait_base):
    """Retry-After when the answer had one, else jittered exponential backoff; never past the deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.backoff = tenacity.wait_exponential_jitter(initial=0.25, max=8.0, jitter=0.25)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            # A little jitter on top, so clients told the same Retry-After do not return in lockstep.
            seconds = exc.retry_after + random.uniform(0, min(1.0, 0.1 * exc.retry_after))
        else:
            seconds = self.backoff(retry_state)
        return self.deadline.cap(seconds)


def _retryable(exc: BaseException, deadline: Deadline, idempotent: bool) -> bool:
    if isinstance(exc, APIError):
        left = deadline.remaining()
        patience = MAX_RETRY_AFTER_SECONDS if left is None else min(left, MAX_RETRY_AFTER_SECONDS)
        return exc.retryable and (exc.retry_after is None or exc.retry_after <= patience)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True  # the request never reached the service
    # A read failure may come after the service acted: only requests safe to repeat are retried.
    return idempotent and isinstance(exc, httpx.TransportError | StreamDropped)


def stream_retry_policy(max_retries: int, deadline: Deadline) -> dict[str, Any]:
    """Re-opening an event stream: until the deadline when there is one (a restart of the service
    is ridden out), else `max_retries` times."""
    policy = retry_policy(max_retries, deadline, idempotent=True)
    if deadline.at is not None:
        policy["stop"] = _DeadlineStop(deadline)
    return policy


def retry_policy(max_retries: int, deadline: Deadline, idempotent: bool) -> dict[str, Any]:
    """Keyword arguments of `tenacity.Retrying` / `AsyncRetrying` for one call."""
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(max_retries + 1) | _DeadlineStop(deadline)
    return {
        "stop": stop,
        "wait": _Wait(deadline),
        "retry": tenacity.retry_if_exception(lambda exc: _retryable(exc, deadline, idempotent)),
        "reraise": True,
    }
