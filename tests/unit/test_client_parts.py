"""The client's pure parts: error envelope → exception class, Retry-After, request bodies, plain progress lines."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from app.errors import ErrorType
from diffusion_client import errors
from diffusion_client._core import request_body, same_origin
from diffusion_client.display import LineDisplay
from diffusion_client.resources import Job
from tests.helpers import job_object


def envelope(type_: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"type": type_, "message": "m", "param": param}}).encode()


def test_every_error_type_of_the_api_has_its_own_class() -> None:
    assert set(errors.ERROR_TYPES) == {t.value for t in ErrorType}
    for type_, cls in errors.ERROR_TYPES.items():
        exc = errors.error_from_response(400, {}, envelope(type_, "width"))
        assert type(exc) is cls and (exc.type, exc.param) == (type_, "width")
        assert isinstance(exc, errors.APIError) and isinstance(exc, errors.DiffusionError)
        assert cls.__doc__


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [(418, envelope("brand_new"), False), (502, b"<html>Bad Gateway</html>", True), (500, b"", False)],
)
def test_unknown_types_and_foreign_bodies_fall_back(status: int, body: bytes, retryable: bool) -> None:
    exc = errors.error_from_response(status, {}, body)
    assert type(exc) is errors.UnknownAPIError and exc.status == status and exc.retryable is retryable


def test_retryable_types_and_retry_after() -> None:
    full = errors.error_from_response(429, {"retry-after": "10", "x-request-id": "r1"}, envelope("queue_full"))
    assert isinstance(full, errors.QueueFullError) and full.retryable
    assert (full.retry_after, full.request_id) == (10.0, "r1")
    assert not errors.error_from_response(409, {}, envelope("conflict")).retryable
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (errors.parse_retry_after(later) or 0) <= 30
    assert errors.parse_retry_after("soon") is None and errors.parse_retry_after(None) is None


def test_timeouts_are_connection_errors_and_builtin_timeouts() -> None:
    assert issubclass(errors.APITimeoutError, errors.APIConnectionError)
    assert issubclass(errors.APITimeoutError, TimeoutError)


def test_request_body_encodes_images_and_drops_none(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(b"\x89PNG")
    body = request_body("p", {"init_image": path, "mask_image": b"MASK", "control_image": "data:image/png;base64,AA"})
    assert base64.b64decode(body["init_image"]) == b"\x89PNG" and base64.b64decode(body["mask_image"]) == b"MASK"
    assert body["control_image"] == "data:image/png;base64,AA"
    assert request_body("p", {"seed": None, "width": 64}) == {"prompt": "p", "width": 64}  # type: ignore[typeddict-item]


def test_same_origin() -> None:
    assert same_origin("/v1/images/x", "http://h:8000")
    assert same_origin("http://h:8000/v1/images/x", "http://h:8000")
    assert not same_origin("https://bucket.s3.amazonaws.com/x?X-Amz-Signature=s", "http://h:8000")
    assert not same_origin("http://h:9000/x", "http://h:8000")


def test_plain_progress_lines_have_no_carriage_returns() -> None:
    out = io.StringIO()
    display = LineDisplay(out)
    for state in [job_object("j", "queued")] + [job_object("j", "running", s, 40) for s in range(41)]:
        display.update(Job.parse(state))
    display.update(Job.parse(job_object("j", "succeeded", 40, 40)))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "job j queued (waiting)"
    assert 10 <= len(lines) <= 13, "one line per tenth of progress, not one per step"
    assert lines[-1] == "job j succeeded"
