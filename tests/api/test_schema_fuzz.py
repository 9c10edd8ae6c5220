"""Schemathesis against the live API: the API process over HTTP, with a real Redis and a worker behind it.

Promise (docs/reliability.md): no request makes the API answer a server error (5xx), and every answer
matches the schema the API publishes (a documented status, its content type, a body of its shape).
First every operation is called by hand on a real job (its answers checked the same way), then
schemathesis generates EXAMPLES requests per operation and mode (valid and invalid), derandomized so a
CI run is repeatable, and again for each job operation with the id of a real job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from redis import Redis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import stack_env
from tests.helpers import RedisServer, start_api, start_worker, wait_for, wait_ready

pytestmark = pytest.mark.slow

EXAMPLES = 20  # per operation

# Small limits, so that whatever the fuzzer gets accepted runs in a moment on the tiny model (the
# OpenAI-compatible route waits for its job). No webhook secret: webhooks are refused before any lookup,
# so no generated URL is ever contacted.
LIMITS = {
    "DIFFUSION_MAX_INFERENCE_STEPS": "2",
    "DIFFUSION_DEFAULT_STEPS": "2",  # the worker's default, within the limit (the OpenAI route sends no steps)
    "DIFFUSION_MAX_IMAGE_SIDE": "64",
    "DIFFUSION_MAX_IMAGES_PER_REQUEST": "2",
    "DIFFUSION_SERVED_MODELS": '["tiny-sd"]',
}


@pytest.fixture(scope="module")
def live_api(redis_server: RedisServer, tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of an API process with one warm worker on the tiny model."""
    tmp = tmp_path_factory.mktemp("fuzz")
    prefix = f"z{uuid.uuid4().hex[:8]}"
    env = stack_env(redis_server.url, prefix, tmp / "images", **LIMITS)
    worker = start_worker(tiny_sd, {**env, "DIFFUSION_WORKER_ID": f"{prefix}-w"}, tmp / "worker.log", name="tiny-sd")
    api = start_api(env, tmp / "api.log")
    try:
        wait_ready(worker, Redis.from_url(redis_server.url), f"{prefix}.generate.tiny-sd", f"{prefix}-w")
        yield f"http://127.0.0.1:{api.port}"
    finally:
        api.stop()
        worker.stop()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(live_api: str) -> Any:
    """The OpenAPI schema the live API serves."""
    return schemathesis.openapi.from_url(f"{live_api}/openapi.json")


def call(schema: Any, method: str, path: str, **parts: Any) -> Any:
    """One request by hand, through schemathesis, with every check: the response."""
    return schema[path][method].Case(**parts).call_and_validate(checks=CHECKS, timeout=60)


def succeeded_job(schema: Any) -> str:
    """A job that ran to the end (checked answers all the way)."""
    job = call(schema, "POST", "/v1/generations", body={"prompt": "a red circle", "num_inference_steps": 1}).json()
    path = {"job_id": job["id"]}
    wait_for(
        lambda: call(schema, "GET", "/v1/generations/{job_id}", path_parameters=path).json()["status"] == "succeeded",
        30,
        "the job to succeed",
    )
    return str(job["id"])


def test_every_operation_answers_inside_the_schema_on_real_jobs(api_schema: Any) -> None:
    job_id = succeeded_job(api_schema)
    path = {"job_id": job_id}
    view = call(api_schema, "GET", "/v1/generations/{job_id}", path_parameters=path).json()
    assert view["images"], view
    call(api_schema, "GET", "/v1/generations", query={"status": "succeeded", "limit": 1})
    events = call(api_schema, "GET", "/v1/generations/{job_id}/events", path_parameters=path)
    last = [line for line in events.text.splitlines() if line.startswith("id: ")][-1][4:]
    # An EventSource reconnects after the terminal event with its id: the stream ends at once, empty.
    resumed = call(
        api_schema, "GET", "/v1/generations/{job_id}/events", path_parameters=path, headers={"Last-Event-ID": last}
    )
    assert resumed.status_code == 200 and resumed.text == "" and resumed.elapsed < 5
    assert call(api_schema, "POST", "/v1/generations/{job_id}/cancel", path_parameters=path).status_code == 409
    assert call(api_schema, "POST", "/v1/generations/{job_id}/replay", path_parameters=path).status_code == 202
    url = httpx.URL(view["images"][0]["url"])
    name = url.path.rsplit("/", 1)[1]
    query = dict(url.params)
    image = call(api_schema, "GET", "/v1/images/{job_id}/{name}", path_parameters={**path, "name": name}, query=query)
    assert image.status_code == 200
    for response_format in ("url", "b64_json"):
        body = {"prompt": "a blue square", "size": "64x64", "response_format": response_format}
        answer = call(api_schema, "POST", "/v1/images/generations", body=body)
        assert answer.status_code == 200, answer.text
    call(api_schema, "GET", "/v1/models")
    assert call(api_schema, "DELETE", "/v1/generations/{job_id}", path_parameters=path).status_code == 204


def fuzz(operation: Any, mode: GenerationMode, **fixed: Any) -> str | None:
    """Run EXAMPLES generated cases of one operation in one mode (with `fixed` path parameters); the first
    failure, described, or None."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],  # no shrinking: the failing case is reported as generated
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=60)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body): the negative mode has no case
        return None
    except (Exception, BaseExceptionGroup) as exc:  # check failures (a group) or a transport error: findings
        return f"{operation.label} ({mode.value}{', ' + str(fixed) if fixed else ''}): {exc}"
    return None


def test_no_generated_request_gets_a_server_error_or_an_answer_outside_the_schema(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10, "the schema lists the API's operations"
    runs = [(op, mode, {}) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    # The same with the id of a real job: what a client that has one can send (a job of its own per operation,
    # since some end or delete it).
    runs += [
        (op, GenerationMode.POSITIVE, {"job_id": succeeded_job(api_schema)})
        for op in operations
        if "{job_id}" in op.path
    ]
    failures = [failure for op, mode, fixed in runs if (failure := fuzz(op, mode, **fixed)) is not None]
    assert not failures, "\n\n".join(failures)
