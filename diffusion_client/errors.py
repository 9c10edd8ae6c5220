"""Exceptions of the client: one class per `error.type` of the API's envelope, plus transport failures.

Everything the client raises derives from `DiffusionError`. An answer of the service becomes the
`APIError` subclass of its envelope's type (`InvalidRequestError` for `invalid_request`, ...); a type
this client does not know yet, or a body that is not the envelope (a proxy's 502 page), becomes
`UnknownAPIError`. Failing to reach the service becomes `APIConnectionError`, and a deadline that
passed `APITimeoutError` (also a builtin `TimeoutError`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar


class DiffusionError(Exception):
    """Base of every exception the client raises."""


class APIConnectionError(DiffusionError):
    """The service could not be reached (refused, reset, DNS, TLS), retries included."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """A timeout or a wait's deadline passed before the service answered or the job ended."""


class APIError(DiffusionError):
    """An error answer of the service: HTTP status and the envelope's type, message and param."""

    error_type: ClassVar[str] = ""
    _retry: ClassVar[bool] = False

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        param: str | None = None,
        *,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {type_}: {message}" + (f" (param {param})" if param else ""))
        self.status, self.type, self.message, self.param = status, type_, message, param
        self.retry_after = retry_after
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (queue full, rate limited, unavailable)."""
        return self._retry


class InvalidRequestError(APIError):
    """422: a field is missing, malformed, unknown or over a limit; `param` names it."""

    error_type = "invalid_request"


class UnauthorizedError(APIError):
    """401: the API key is missing, unknown or revoked."""

    error_type = "unauthorized"


class ForbiddenError(APIError):
    """403: an image URL unsigned, tampered or expired (or a key without the right)."""

    error_type = "forbidden"


class NotFoundError(APIError):
    """404: no such job or image, or past its retention."""

    error_type = "not_found"


class MethodNotAllowedError(APIError):
    """405: the route does not take this method."""

    error_type = "method_not_allowed"


class ConflictError(APIError):
    """409: the job's state forbids it, or an Idempotency-Key was reused with another body."""

    error_type = "conflict"


class PayloadTooLargeError(APIError):
    """413: the request body is over the service's limit."""

    error_type = "payload_too_large"


class QueueFullError(APIError):
    """429: the model's queue is full; `retry_after` says when to try again."""

    error_type = "queue_full"
    _retry = True


class RateLimitedError(APIError):
    """429: this API key's quota is used up for now; `retry_after` says when to try again."""

    error_type = "rate_limited"
    _retry = True


class OverloadedError(APIError):
    """429: the server follows as many event streams or waiting requests as it may; retry after `retry_after`."""

    error_type = "overloaded"
    _retry = True


class ServiceUnavailableError(APIError):
    """503: Redis unreachable or no warm worker serves the model; `retry_after` says when to try again."""

    error_type = "service_unavailable"
    _retry = True


class InternalServerError(APIError):
    """500: a bug in the service; it is logged there under `request_id`."""

    error_type = "internal_error"


class UnknownAPIError(APIError):
    """An error whose type this client does not know, or a body that is not the API's envelope."""

    # Gateways and proxies answer these without the envelope; they are worth another try.
    retryable_statuses: ClassVar[frozenset[int]] = frozenset({429, 502, 503, 504})

    @property
    def retryable(self) -> bool:
        """True for statuses that say "try again later"."""
        return self.status in self.retryable_statuses


ERROR_TYPES: dict[str, type[APIError]] = {
    cls.error_type: cls
    for cls in (
        InvalidRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MethodNotAllowedError,
        ConflictError,
        PayloadTooLargeError,
        QueueFullError,
        RateLimitedError,
        OverloadedError,
        ServiceUnavailableError,
        InternalServerError,
    )
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> APIError:
    """The exception for an error answer: the class of its envelope's type, else `UnknownAPIError`."""
    error: Any = None
    try:
        error = json.loads(body).get("error") if body else None
    except (ValueError, AttributeError):
        error = None
    retry_after = parse_retry_after(headers.get("retry-after"))
    request_id = headers.get("x-request-id")
    if not isinstance(error, dict):
        text = body.decode("utf-8", "replace").strip()[:200] or "no body"
        return UnknownAPIError(status, "unknown", text, retry_after=retry_after, request_id=request_id)
    type_ = str(error.get("type") or "unknown")
    cls = ERROR_TYPES.get(type_, UnknownAPIError)
    message = str(error.get("message") or "")
    param = error.get("param")
    return cls(
        status,
        type_,
        message,
        str(param) if param is not None else None,
        retry_after=retry_after,
        request_id=request_id,
    )
