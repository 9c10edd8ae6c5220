"""One trace across both processes: the API (uvicorn) and a worker (`python -m worker`) export their spans over
OTLP/HTTP to a real receiver, which decodes OpenTelemetry's protobuf export requests."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from redis import Redis

from tests.conftest import stack_env
from tests.helpers import RedisServer, http_server, run_job, start_api, start_worker, wait_for, wait_ready

pytestmark = pytest.mark.slow

PROMPT = "a blue square, traced"


class Receiver:
    """Spans a collector received: (service, name, trace id, span id, parent span id, attributes)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: set[str] = set()
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    receiver.paths.add(self.path)
                    for resource in request.resource_spans:
                        attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
                        for scope in resource.scope_spans:
                            receiver.spans += [receiver.row(attrs["service.name"], span) for span in scope.spans]
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    @staticmethod
    def row(service: str, span: Any) -> dict[str, Any]:
        attributes = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
        return {
            "service": service,
            "name": span.name,
            "trace": span.trace_id.hex(),
            "id": span.span_id.hex(),
            "parent": span.parent_span_id.hex(),
            "start": span.start_time_unix_nano,
            "end": span.end_time_unix_nano,
            "attributes": attributes,
        }


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    spans = Receiver()
    with http_server(spans.handler()) as url:
        yield spans, url


def test_one_trace_from_submit_to_stored_images(
    receiver: tuple[Receiver, str], redis_server: RedisServer, tiny_sd: Path, tmp_path: Path
) -> None:
    spans, url = receiver
    prefix = f"o{uuid.uuid4().hex[:10]}"
    env = stack_env(
        redis_server.url,
        prefix,
        tmp_path / "images",
        OTEL_EXPORTER_OTLP_ENDPOINT=url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # milliseconds: export soon after each span ends
    )
    redis = Redis.from_url(redis_server.url)
    api = start_api(env, tmp_path / "api.log")
    worker = start_worker(tiny_sd, {**env, "DIFFUSION_WORKER_ID": f"{prefix}-w"}, tmp_path / "w.log", name="tiny-sd")
    try:
        wait_ready(worker, redis, f"{prefix}.generate.tiny-sd", f"{prefix}-w")
        with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as client:
            job = run_job(client, {"prompt": PROMPT, "num_inference_steps": 3})
        assert job["status"] == "succeeded"

        def traced() -> list[dict[str, Any]]:
            with spans.lock:
                return [s for s in spans.spans if s["attributes"].get("diffusion.job_id") == job["id"]]

        wait_for(lambda: len(traced()) >= 6, 30, "the spans of both processes")
    finally:
        worker.stop()
        api.stop()
    found = {s["name"]: s for s in traced()}
    submit = found.pop("submit")
    assert submit["service"] == "diffusion-api" and not submit["parent"], "the API's span is the trace's root"
    assert sorted(found) == sorted(["queue_wait", "load", "denoise", "decode", "store"])
    for span in found.values():
        assert span["service"] == "diffusion-worker"
        assert (span["trace"], span["parent"]) == (submit["trace"], submit["id"]), span["name"]
    order = [found[name] for name in ("queue_wait", "load", "denoise", "decode", "store")]
    assert all(a["end"] <= b["start"] + 5_000_000 for a, b in itertools.pairwise(order))
    assert submit["start"] <= found["queue_wait"]["start"] + 5_000_000
    assert spans.paths == {"/v1/traces"}
    assert PROMPT not in str(spans.spans), "span attributes never carry the prompt"
