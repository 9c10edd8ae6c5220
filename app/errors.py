"""The one error envelope, its closed set of types, and the one place exceptions become responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from contract.storage import ObjectMissing, StorageError

log = logging.getLogger(__name__)


class ErrorType(StrEnum):
    """Every `error.type` a client can see."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    FORBIDDEN = "forbidden"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    CONFLICT = "conflict"
    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"


class ErrorBody(BaseModel):
    """What went wrong, and which request field (`param`) when one did."""

    type: ErrorType
    message: str
    param: str | None = None


class ErrorEnvelope(BaseModel):
    """Every non-2xx response body."""

    error: ErrorBody


class ApiError(Exception):
    """An error with a status, type and message meant for the client."""

    status = 500
    type = ErrorType.INTERNAL_ERROR

    def __init__(self, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers


class InvalidRequest(ApiError):
    """A field is missing, malformed or over a configured limit."""

    status, type = 422, ErrorType.INVALID_REQUEST


class Unauthorized(ApiError):
    """No API key, or one that is unknown or revoked (`Authorization: Bearer <key>`)."""

    status, type = 401, ErrorType.UNAUTHORIZED

    def __init__(self, message: str) -> None:
        super().__init__(message, "Authorization", {"WWW-Authenticate": 'Bearer realm="diffusion"'})


class NotFound(ApiError):
    """No such job or image (or past retention)."""

    status, type = 404, ErrorType.NOT_FOUND


class Forbidden(ApiError):
    """An image URL whose signature is missing, wrong or expired."""

    status, type = 403, ErrorType.FORBIDDEN


class Conflict(ApiError):
    """The job's state forbids it (already finished, still running) or an Idempotency-Key was reused."""

    status, type = 409, ErrorType.CONFLICT


class PayloadTooLarge(ApiError):
    """The request body is over `max_body_bytes`."""

    status, type = 413, ErrorType.PAYLOAD_TOO_LARGE


class QueueFull(ApiError):
    """The model's queue is at `max_queue_depth`; retry after `Retry-After` seconds."""

    status, type = 429, ErrorType.QUEUE_FULL


class RateLimited(ApiError):
    """The API key is over its requests per minute or its jobs queued-or-running; retry after `Retry-After`."""

    status, type = 429, ErrorType.RATE_LIMITED


class Overloaded(ApiError):
    """This server holds as many event streams or waiting OpenAI requests as it may; retry after `Retry-After`."""

    status, type = 429, ErrorType.OVERLOADED


class ServiceUnavailable(ApiError):
    """A dependency (Redis, the image store) cannot be reached; nothing was written."""

    status, type = 503, ErrorType.SERVICE_UNAVAILABLE


def error_response(
    status: int, type_: ErrorType, message: str, param: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Render the envelope."""
    body = ErrorEnvelope(error=ErrorBody(type=type_, message=message, param=param))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def responses(*errors: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors a route can return."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        described = (err.__doc__ or "").strip()
        if err.status in out:  # two types share a status (429): document both
            described = f"{out[err.status]['description']} Or: {described}"
        out[err.status] = {"model": ErrorEnvelope, "description": described}
    return out


def _param_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


OPENAI_PATHS = ("/v1/images/generations",)


def _reply(
    request: Request,
    status: int,
    type_: ErrorType,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The envelope, or OpenAI's error shape on the OpenAI-compatible routes (their SDKs parse it)."""
    if request.url.path not in OPENAI_PATHS:
        return error_response(status, type_, message, param, headers)
    kind = "server_error" if status >= 500 else "authentication_error" if status == 401 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": type_.value}}
    return JSONResponse(body, status_code=400 if status == 422 else status, headers=headers)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _reply(request, exc.status, exc.type, exc.message, exc.param, exc.headers)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _param_of(tuple(first["loc"]))
    messages = [f"{_param_of(tuple(e['loc'])) or 'body'}: {e['msg']}" for e in errors]
    return _reply(request, 422, ErrorType.INVALID_REQUEST, "; ".join(messages), param)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: ErrorType.NOT_FOUND, 405: ErrorType.METHOD_NOT_ALLOWED, 413: ErrorType.PAYLOAD_TOO_LARGE}
    type_ = kinds.get(exc.status_code, ErrorType.INVALID_REQUEST)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path; every route's count.
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        return _reply(
            request, 405, type_, f"method {request.method} not allowed; allowed: {', '.join(allowed)}", None, headers
        )
    if exc.status_code == 400:  # a body that is not even JSON (bad UTF-8): invalid like any malformed body
        return _reply(request, 422, type_, f"body: {exc.detail}", "body", headers)
    return _reply(request, exc.status_code, type_, str(exc.detail), None, headers)


def _allowed_methods(request: Request) -> list[str]:
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _on_redis(request: Request, exc: Exception) -> JSONResponse:
    full = isinstance(exc, OutOfMemoryError | ExecAbortError)
    log.warning("redis %s: %s", "is full" if full else "unreachable", exc)
    message = (
        "the job queue (Redis) is full and refuses writes; nothing was queued, retry later"
        if full
        else "the job queue (Redis) is unreachable; nothing was queued, retry shortly"
    )
    return _reply(request, 503, ErrorType.SERVICE_UNAVAILABLE, message, headers={"Retry-After": "30" if full else "5"})


async def _on_storage(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ObjectMissing):
        return _reply(request, 404, ErrorType.NOT_FOUND, "an image of this generation no longer exists")
    log.warning("image store failed: %s", exc)
    message = "the image store is unreachable; nothing was done, retry shortly"
    return _reply(request, 503, ErrorType.SERVICE_UNAVAILABLE, message, headers={"Retry-After": "5"})


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return _reply(request, 500, ErrorType.INTERNAL_ERROR, "internal error; it has been logged")


def install(app: FastAPI) -> None:
    """Register the handlers: every error leaves as the envelope, never as a traceback."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RedisConnectionError, _on_redis)
    app.add_exception_handler(RedisTimeoutError, _on_redis)
    app.add_exception_handler(OutOfMemoryError, _on_redis)
    app.add_exception_handler(ExecAbortError, _on_redis)
    app.add_exception_handler(StorageError, _on_storage)
    app.add_exception_handler(Exception, _on_unexpected)
