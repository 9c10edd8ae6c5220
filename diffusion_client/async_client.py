"""The asynchronous client: the same surface as `DiffusionClient`, every call awaitable (asyncio or trio).

`stream` is an async generator; close it (`contextlib.aclosing`) when leaving it before the job ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing
from typing import Any, Unpack

import anyio
import httpx
import tenacity
from httpx_sse import SSEError, aconnect_sse

from diffusion_client._core import (
    SSE_READ_TIMEOUT_SECONDS,
    Deadline,
    StreamDropped,
    json_of,
    request_body,
    resolve_config,
    retry_policy,
    same_origin,
    stream_retry_policy,
    transport_error,
)
from diffusion_client.errors import APITimeoutError, UnknownAPIError, error_from_response
from diffusion_client.resources import GenerationParams, Image, Job, Model


class AsyncDiffusionClient:
    """Async client of one service: `base_url` (default `$DIFFUSION_URL`), `api_key` (default `$DIFFUSION_API_KEY`).

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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = resolve_config(base_url, api_key, timeout, max_retries, headers)
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url, headers=self.config.headers, timeout=timeout, transport=transport
        )

    @property
    def base_url(self) -> str:
        """The service's base URL."""
        return self.config.base_url

    async def __aenter__(self) -> AsyncDiffusionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(
        self, method: str, url: str, *, deadline: Deadline | None = None, idempotent: bool = True, **kwargs: Any
    ) -> httpx.Response:
        deadline = deadline or Deadline(None)
        authorize = same_origin(url, self.base_url)
        try:
            async for attempt in tenacity.AsyncRetrying(**retry_policy(self.config.max_retries, deadline, idempotent)):
                with attempt:
                    request = self._http.build_request(
                        method, url, timeout=deadline.timeout(self.config.timeout), **kwargs
                    )
                    if not authorize:  # a storage URL (S3 presigned, CDN): never hand it our key
                        request.headers.pop("Authorization", None)
                    response = await self._http.send(request)
                    if response.status_code >= 400:
                        raise error_from_response(response.status_code, response.headers, response.content)
                    return response
        except (httpx.TransportError, StreamDropped) as exc:
            raise transport_error(exc, deadline, self.base_url) from exc
        raise AssertionError("unreachable: tenacity returns or raises")

    async def models(self) -> list[Model]:
        """The served models with their native size, defaults, schedulers, limits and load."""
        return [Model.parse(m) for m in json_of(await self._request("GET", "/v1/models"))["data"]]

    async def submit(
        self, prompt: str, *, idempotency_key: str | None = None, **params: Unpack[GenerationParams]
    ) -> Job:
        """Queue a generation; answers at once with the queued job."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        body = request_body(prompt, params)
        return Job.parse(json_of(await self._request("POST", "/v1/generations", json=body, headers=headers)))

    async def generate(
        self,
        prompt: str,
        *,
        timeout: float = 600.0,
        idempotency_key: str | None = None,
        **params: Unpack[GenerationParams],
    ) -> Job:
        """Submit and wait for the job to end (succeeded, failed or canceled)."""
        job = await self.submit(prompt, idempotency_key=idempotency_key, **params)
        return await self.wait(job.id, timeout=timeout)

    async def get(self, job_id: str) -> Job:
        """The job's current state."""
        return Job.parse(json_of(await self._request("GET", f"/v1/generations/{job_id}")))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (`ConflictError` if it already ended)."""
        return Job.parse(json_of(await self._request("POST", f"/v1/generations/{job_id}/cancel")))

    async def replay(self, job_id: str) -> Job:
        """Queue the same generation again (same model and resolved parameters, seed included) as a new job."""
        response = await self._request("POST", f"/v1/generations/{job_id}/replay", idempotent=False)
        return Job.parse(json_of(response))

    async def delete(self, job_id: str) -> None:
        """Delete a finished job and its images now (`ConflictError` while it is queued or running)."""
        await self._request("DELETE", f"/v1/generations/{job_id}")

    async def download(self, image: Image | str) -> bytes:
        """The bytes of an output image (an `Image` or its URL)."""
        return (await self._request("GET", image.url if isinstance(image, Image) else image)).content

    async def wait(self, job_id: str, timeout: float | None = 600.0, poll_interval: float | None = None) -> Job:
        """Wait until the job ends and return it: over server-sent events, or by polling every `poll_interval`.

        Raises `APITimeoutError` (a `TimeoutError`) once `timeout` seconds have passed.
        """
        deadline = Deadline(timeout)
        if poll_interval is None:
            async with aclosing(self._events(job_id, None, deadline)) as events:
                async for job in events:
                    if job.done:
                        return job
            raise StreamDropped(f"the event stream of job {job_id} ended before the job did")
        while True:
            job = Job.parse(json_of(await self._request("GET", f"/v1/generations/{job_id}", deadline=deadline)))
            if job.done:
                return job
            if deadline.expired:
                raise APITimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            await anyio.sleep(deadline.cap(poll_interval))

    def stream(
        self, job_id: str, *, timeout: float | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[Job]:
        """Every state of the job over server-sent events, until it ends; re-opened with `Last-Event-ID` if dropped."""
        return self._events(job_id, last_event_id, Deadline(timeout))

    async def _events(self, job_id: str, last_event_id: str | None, deadline: Deadline) -> AsyncGenerator[Job, None]:
        last = last_event_id
        while True:
            stack, events, first = await self._open_events(job_id, last, deadline)
            async with stack:
                job: Job | None = first
                while job is not None:
                    last = job.event_id or last
                    yield job
                    if job.done:
                        return
                    job = await self._next(events, deadline)
            # The stream ended early: open it again after the last event seen.

    async def _next(self, events: AsyncIterator[Job], deadline: Deadline) -> Job | None:
        """The next event, None when the stream ended or dropped; `APITimeoutError` at the deadline."""
        try:
            with anyio.fail_after(deadline.remaining()):
                return await anext(events, None)
        except TimeoutError as exc:
            raise APITimeoutError(f"the job did not end within the {deadline.seconds:g} s timeout") from exc
        except httpx.TransportError:
            return None

    async def _open_events(
        self, job_id: str, last: str | None, deadline: Deadline
    ) -> tuple[AsyncExitStack, AsyncIterator[Job], Job]:
        """An open event stream whose first event has arrived (opening is retried like any request)."""
        policy = stream_retry_policy(self.config.max_retries, deadline)
        try:
            async for attempt in tenacity.AsyncRetrying(**policy):
                with attempt:
                    stack = AsyncExitStack()
                    try:
                        events = await self._connect(stack, job_id, last, deadline)
                        first = await self._next_or_raise(events, deadline)
                    except BaseException:
                        await stack.aclose()
                        raise
                    return stack, events, first
        except (httpx.TransportError, StreamDropped) as exc:
            raise transport_error(exc, deadline, self.base_url) from exc
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _next_or_raise(self, events: AsyncIterator[Job], deadline: Deadline) -> Job:
        try:
            with anyio.fail_after(deadline.remaining()):
                first = await anext(events, None)
        except TimeoutError as exc:
            raise APITimeoutError(f"the job did not end within the {deadline.seconds:g} s timeout") from exc
        except SSEError as exc:
            raise UnknownAPIError(200, "unknown", f"not an event stream: {exc}") from exc
        if first is None:
            raise StreamDropped("the event stream closed before any event")
        return first

    async def _connect(
        self, stack: AsyncExitStack, job_id: str, last: str | None, deadline: Deadline
    ) -> AsyncIterator[Job]:
        headers = {"Last-Event-ID": last} if last else {}
        timeout = deadline.timeout(self.config.timeout, read=SSE_READ_TIMEOUT_SECONDS)
        source = await stack.enter_async_context(
            aconnect_sse(self._http, "GET", f"/v1/generations/{job_id}/events", headers=headers, timeout=timeout)
        )
        if source.response.status_code >= 400:
            response = source.response
            await response.aread()
            raise error_from_response(response.status_code, response.headers, response.content)
        sse = source.aiter_sse()
        stack.push_async_callback(sse.aclose)
        return (Job.parse(json.loads(event.data), event.id or None) async for event in sse if event.data)
