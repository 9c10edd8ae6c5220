"""OpenTelemetry traces across both processes, off unless an OTLP endpoint is configured.

The API opens a span per submitted job and writes that span's W3C trace context (`traceparent`,
`tracestate`) into the job's payload (`JobPayload.trace`); the worker reads it back and makes its
spans (queue wait, load, denoise, decode, store) children of the API's span, so one trace follows
a job from the HTTP request to its stored images (`worker.tracing`).

On only when `DIFFUSION_OTLP_ENDPOINT` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set: spans
then go by OTLP over HTTP (protobuf) to `<endpoint>/v1/traces`, batched off the request path. The
exporter's other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`) apply as usual. While off, nothing of
OpenTelemetry's SDK or exporter is imported and every method here does nothing.

Each `Tracing` has its own tracer provider (none is installed globally), so tests can give a process
part an in-memory exporter without touching the others.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

INSTRUMENTATION = "diffusion-service"


class Tracing:
    """A process's tracer, or none (tracing off: every method is a no-op)."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer

    @classmethod
    def open(cls, endpoint: str | None, service: str, exporter: SpanExporter | None = None) -> Tracing:
        """Tracing to the OTLP/HTTP `endpoint` (or to `exporter`) as `service`; off when both are None."""
        if endpoint is None and exporter is None:
            return cls()
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=f"{str(endpoint).rstrip('/')}/v1/traces")
        resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, if set
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        # Exports on a background thread; the provider flushes what is left when the process exits.
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider.get_tracer(INSTRUMENTATION))

    @property
    def on(self) -> bool:
        """Whether spans are recorded."""
        return self.tracer is not None

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[object]:
        """A context manager: a span that is the current one inside the block (nothing when off)."""
        if self.tracer is None:
            return nullcontext()
        from opentelemetry.trace import SpanKind

        return self.tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes)

    def carrier(self) -> dict[str, str] | None:
        """The current span's W3C trace context as strings for a job payload; None when off or outside a span."""
        if self.tracer is None:
            return None
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        return carrier or None

    def parent(self, carrier: dict[str, str] | None) -> Context | None:
        """The context a payload's trace carrier names (its spans' parent); None when off or absent."""
        if self.tracer is None or not carrier:
            return None
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        return TraceContextTextMapPropagator().extract(carrier)
