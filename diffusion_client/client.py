"""A small typed client over httpx. Retries 429 and 503 (honouring Retry-After) and connection errors.

Submits always carry an Idempotency-Key (one is generated when the caller gives none), so a retried
submit can never create a second job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "canceled")
RETRY_STATUSES = (429, 503)


class ApiError(Exception):
    """An error answer of the service: HTTP status and the envelope's type, message and param."""

    def __init__(self, status: int, type_: str, message: str, param: str | None) -> None:
        super().__init__(f"{status} {type_}: {message}" + (f" (param {param})" if param else ""))
        self.status, self.type, self.message, self.param = status, type_, message, param


@dataclass(frozen=True)
class Progress:
    """Stage, denoising step and overall fraction of a job."""

    stage: str
    step: int
    total_steps: int
    fraction: float


@dataclass(frozen=True)
class Image:
    """One output image and its signed URL."""

    url: str
    width: int
    height: int
    seed: int
    content_type: str


@dataclass(frozen=True)
class Job:
    """A generation job as the service reports it; `raw` has every field."""

    id: str
    status: str
    progress: Progress
    images: list[Image]
    error: dict[str, Any] | None
    queue_position: int | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        """True once the job can no longer change."""
        return self.status in TERMINAL

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Job:
        """Build from the service's JSON job object."""
        return cls(
            id=data["id"],
            status=data["status"],
            progress=Progress(**data["progress"]),
            images=[
                Image(**{k: im[k] for k in ("url", "width", "height", "seed", "content_type")})
                for im in data.get("images", [])
            ],
            error=data.get("error"),
            queue_position=data.get("queue_position"),
            raw=data,
        )


class DiffusionClient:
    """Client of one service base URL."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        retries: int = 4,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.retries = retries
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def __enter__(self) -> DiffusionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(min(8.0, 0.25 * 2**attempt))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(float(response.headers.get("retry-after", 0.25 * 2**attempt)))
                continue
            if response.status_code >= 400:
                error = (response.json().get("error") or {}) if response.content else {}
                raise ApiError(
                    response.status_code, error.get("type", "unknown"), error.get("message", ""), error.get("param")
                )
            return response
        raise AssertionError("unreachable")

    def submit(self, prompt: str, *, idempotency_key: str | None = None, **params: Any) -> Job:
        """Queue a generation (`params`: width, height, num_inference_steps, seed, num_images, model, ...)."""
        body = {"prompt": prompt, **{k: v for k, v in params.items() if v is not None}}
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Job.parse(self._request("POST", "/v1/generations", json=body, headers=headers).json())

    def get(self, job_id: str) -> Job:
        """The job's current state."""
        return Job.parse(self._request("GET", f"/v1/generations/{job_id}").json())

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (ApiError 409 if it already ended)."""
        return Job.parse(self._request("POST", f"/v1/generations/{job_id}/cancel").json())

    def stream(self, job_id: str) -> Iterator[Job]:
        """Every state of the job over server-sent events, reconnecting (with Last-Event-ID) until it ends."""
        last_id: str | None = None
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream(
                    "GET",
                    f"/v1/generations/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self.http.timeout.connect, read=60),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._request("GET", f"/v1/generations/{job_id}")  # raises the API's error
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            last_id = line[4:]
                        elif line.startswith("data: "):
                            job = Job.parse(json.loads(line[6:]))
                            yield job
                            if job.done:
                                return
            except httpx.TransportError:
                time.sleep(0.5)  # dropped: resume after the last event seen

    def wait(self, job_id: str, timeout: float = 600.0, poll_interval: float | None = None) -> Job:
        """Block until the job ends: over SSE, or by polling every `poll_interval` seconds when given."""
        deadline = time.monotonic() + timeout
        if poll_interval is None:
            for job in self.stream(job_id):
                if job.done or time.monotonic() > deadline:
                    break
            return self.get(job_id)
        while True:
            job = self.get(job_id)
            if job.done:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(poll_interval)

    def download(self, image: Image) -> bytes:
        """The bytes of an output image."""
        return self._request("GET", image.url).content
