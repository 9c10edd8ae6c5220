"""The synchronous client: submit, follow (server-sent events through httpx-sse), wait, cancel, replay, download.

Every call retries what is safe to retry (see `_core`); submits carry an `Idempotency-Key` (one is
generated when the caller gives none), so a retried submit never creates a second job. `stream` and
`wait` honour their timeout also while the stream is silent or being re-opened.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import ExitStack, closing, suppress
from itertools import chain
from typing import Any, Unpack

import httpx
import tenacity
from httpx_sse import SSEError, connect_sse

from diffusion_client._core import (
    SSE_READ_TIMEOUT_SECONDS,
    Deadline,
    StreamDropped,
    json_of,
    last_of,
    request_body,
    resolve_config,
    retry_policy,
    same_origin,
    stream_retry_policy,
    transport_error,
)
from diffusion_client.errors import APITimeoutError, UnknownAPIError, error_from_response
from diffusion_client.resources import GenerationParams, Image, Job, Model


class _Watchdog:
    """Shuts an open stream's socket at the deadline, so a read blocked on a silent stream returns."""

    def __init__(self, response: httpx.Response, seconds: float | None) -> None:
        self.timer = None if seconds is None else threading.Timer(seconds, self._fire, args=(response,))
        if self.timer is not None:
            self.timer.daemon = True
            self.timer.start()

    @staticmethod
    def _fire(response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        """Stop the timer (the stream ended first)."""
        if self.timer is not None:
            self.timer.cancel()


class DiffusionClient:
    """Client of one service: `base_url` (default `$DIFFUSION_URL`), `api_key` (default `$DIFFUSION_API_KEY`).

    `timeout` bounds each HTTP request, `max_retries` how often a failed one is tried again.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = resolve_config(base_url, api_key, timeout, max_retries, headers)
        self._http = httpx.Client(
            base_url=self.config.base_url, headers=self.config.headers, timeout=timeout, transport=transport
        )

    @property
    def base_url(self) -> str:
        """The service's base URL."""
        return self.config.base_url

    def __enter__(self) -> DiffusionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(
        self, method: str, url: str, *, deadline: Deadline | None = None, idempotent: bool = True, **kwargs: Any
    ) -> httpx.Response:
        deadline = deadline or Deadline(None)
        authorize = same_origin(url, self.base_url)
        try:
            for attempt in tenacity.Retrying(**retry_policy(self.config.max_retries, deadline, idempotent)):
                with attempt:
                    request = self._http.build_request(
                        method, url, timeout=deadline.timeout(self.config.timeout), **kwargs
                    )
                    if not authorize:  # a storage URL (S3 presigned, CDN): never hand it our key
                        request.headers.pop("Authorization", None)
                    response = self._http.send(request)
                    if response.status_code >= 400:
                        raise error_from_response(response.status_code, response.headers, response.content)
                    return response
        except (httpx.TransportError, StreamDropped) as exc:
            raise transport_error(exc, deadline, self.base_url) from exc
        raise AssertionError("unreachable: tenacity returns or raises")

    def models(self) -> list[Model]:
        """The served models with their native size, defaults, schedulers, limits and load."""
        return [Model.parse(m) for m in json_of(self._request("GET", "/v1/models"))["data"]]

    def submit(self, prompt: str, *, idempotency_key: str | None = None, **params: Unpack[GenerationParams]) -> Job:
        """Queue a generation; answers at once with the queued job."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        body = request_body(prompt, params)
        return Job.parse(json_of(self._request("POST", "/v1/generations", json=body, headers=headers)))

    def generate(
        self,
        prompt: str,
        *,
        timeout: float = 600.0,
        idempotency_key: str | None = None,
        **params: Unpack[GenerationParams],
    ) -> Job:
        """Submit and wait for the job to end (succeeded, failed or canceled)."""
        return self.wait(self.submit(prompt, idempotency_key=idempotency_key, **params).id, timeout=timeout)

    def get(self, job_id: str) -> Job:
        """The job's current state."""
        return Job.parse(json_of(self._request("GET", f"/v1/generations/{job_id}")))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (`ConflictError` if it already ended)."""
        return Job.parse(json_of(self._request("POST", f"/v1/generations/{job_id}/cancel")))

    def replay(self, job_id: str) -> Job:
        """Queue the same generation again (same model and resolved parameters, seed included) as a new job."""
        return Job.parse(json_of(self._request("POST", f"/v1/generations/{job_id}/replay", idempotent=False)))

    def delete(self, job_id: str) -> None:
        """Delete a finished job and its images now (`ConflictError` while it is queued or running)."""
        self._request("DELETE", f"/v1/generations/{job_id}")

    def download(self, image: Image | str) -> bytes:
        """The bytes of an output image (an `Image` or its URL)."""
        return self._request("GET", image.url if isinstance(image, Image) else image).content

    def wait(self, job_id: str, timeout: float | None = 600.0, poll_interval: float | None = None) -> Job:
        """Block until the job ends and return it: over server-sent events, or by polling every `poll_interval`.

        Raises `APITimeoutError` (a `TimeoutError`) once `timeout` seconds have passed, whatever the
        connection does meanwhile.
        """
        deadline = Deadline(timeout)
        if poll_interval is None:
            with closing(self._events(job_id, None, deadline)) as events:
                return last_of(events)
        while True:
            job = self._get_by(job_id, deadline)
            if job.done:
                return job
            if deadline.expired:
                raise APITimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(deadline.cap(poll_interval))

    def _get_by(self, job_id: str, deadline: Deadline) -> Job:
        return Job.parse(json_of(self._request("GET", f"/v1/generations/{job_id}", deadline=deadline)))

    def stream(self, job_id: str, *, timeout: float | None = None, last_event_id: str | None = None) -> Iterator[Job]:
        """Every state of the job over server-sent events, until it ends.

        A dropped stream is re-opened with `Last-Event-ID`, so no state is missed or repeated. Pass
        `last_event_id` (a `Job.event_id`) to resume after that event.
        """
        return self._events(job_id, last_event_id, Deadline(timeout))

    def _events(self, job_id: str, last_event_id: str | None, deadline: Deadline) -> Generator[Job, None, None]:
        last = last_event_id
        while True:
            stack, events, first = self._open_events(job_id, last, deadline)
            with stack:
                try:
                    for job in chain([first], events):
                        last = job.event_id or last
                        yield job
                        if job.done:
                            return
                except httpx.TransportError as exc:
                    if deadline.expired:
                        raise transport_error(exc, deadline, self.base_url) from exc
            # The stream ended early: open it again after the last event seen.

    def _open_events(self, job_id: str, last: str | None, deadline: Deadline) -> tuple[ExitStack, Iterator[Job], Job]:
        """An open event stream whose first event has arrived (opening is retried like any request)."""
        try:
            for attempt in tenacity.Retrying(**stream_retry_policy(self.config.max_retries, deadline)):
                with attempt:
                    stack = ExitStack()
                    try:
                        events = self._connect(stack, job_id, last, deadline)
                        first = next(events, None)
                    except SSEError as exc:
                        stack.close()
                        raise UnknownAPIError(200, "unknown", f"not an event stream: {exc}") from exc
                    except BaseException:
                        stack.close()
                        raise
                    if first is None:
                        stack.close()
                        raise StreamDropped(f"the event stream of job {job_id} closed before any event")
                    return stack, events, first
        except (httpx.TransportError, StreamDropped) as exc:
            raise transport_error(exc, deadline, self.base_url) from exc
        raise AssertionError("unreachable: tenacity returns or raises")

    def _connect(self, stack: ExitStack, job_id: str, last: str | None, deadline: Deadline) -> Iterator[Job]:
        headers = {"Last-Event-ID": last} if last else {}
        timeout = deadline.timeout(self.config.timeout, read=SSE_READ_TIMEOUT_SECONDS)
        source = stack.enter_context(
            connect_sse(self._http, "GET", f"/v1/generations/{job_id}/events", headers=headers, timeout=timeout)
        )
        if source.response.status_code >= 400:
            source.response.read()
            response = source.response
            raise error_from_response(response.status_code, response.headers, response.content)
        stack.callback(_Watchdog(source.response, deadline.remaining()).cancel)
        return (Job.parse(json.loads(event.data), event.id or None) for event in source.iter_sse() if event.data)
