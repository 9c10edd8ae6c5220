"""A job's spans on the worker, children of the API's submit span (the trace context in its payload).

Per attempt: `queue_wait` (submission until this worker started it), `load` (reading input images, text
encoding and setting up: the time before the first denoising step), `denoise` (first to last step),
`decode` (after the last step until the pixels are out) and `store` (encoding and writing the images,
then the record). Jobs denoised as one batch share their load, denoise and decode times; each gets its
own spans in its own trace.

Times are taken on the host. The start of denoising is the end of the first step's callback minus that
step's duration as the step clock measured it (on CUDA, device time); no span is open while the
pipeline runs, so tracing adds a clock read per step and nothing else. A job whose payload has no trace
context (tracing off at the API) gets a root span `job` of its own holding these.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from contract.jobs import JobPayload
from contract.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from worker.jobrun import JobRun


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class JobTrace:
    """The spans of one attempt of one job (nothing at all when tracing is off)."""

    def __init__(self, tracing: Tracing, payload: JobPayload | None = None) -> None:
        self.tracer = tracing.tracer if payload is not None else None
        self.parent: Any = None
        self.root: Span | None = None
        self.attributes: dict[str, Any] = {}
        if self.tracer is None or payload is None:
            return
        self.attributes = {"diffusion.job_id": payload.job_id, "diffusion.model": payload.model}
        self.parent = tracing.parent(payload.trace)
        if self.parent is None:
            from opentelemetry.trace import set_span_in_context

            self.root = self.tracer.start_span("job", attributes=self.attributes, start_time=_ns(payload.created_at))
            self.parent = set_span_in_context(self.root)

    def phase(
        self, name: str, start_ns: int, end_ns: int, attributes: dict[str, Any], error: str | None = None
    ) -> None:
        """One finished phase as a span from `start_ns` to `end_ns` (epoch nanoseconds); `error` marks it failed."""
        if self.tracer is None:
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        kind = SpanKind.CONSUMER if name == "queue_wait" else SpanKind.INTERNAL
        span = self.tracer.start_span(
            name, context=self.parent, kind=kind, attributes={**self.attributes, **attributes}, start_time=start_ns
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(start_ns, end_ns))

    def stored(self, start_ns: int, summary: dict[str, object]) -> None:
        """The `store` span, from the job's end as the store thread wrote it; closes the local root span, if any."""
        failed = summary.get("failed")
        outcome = {f"diffusion.{key}": str(value) for key, value in summary.items()}
        self.phase("store", start_ns, time.time_ns(), outcome, str(failed) if failed else None)
        if self.root is not None:
            self.root.end()


class BatchTrace:
    """Host times of one batch's phases, written as each started job's spans when the batch ends."""

    def __init__(self, tracing: Tracing) -> None:
        self.on = tracing.on
        self.started = time.time_ns()
        self.first_step = self.last_step = 0  # end of the first and of the last step callback
        self.first_step_seconds: float | None = None

    def observed(self, seconds: float) -> None:
        """A step's measured duration (steps report in order: the first one is the first step's)."""
        if self.first_step_seconds is None:
            self.first_step_seconds = seconds

    def stepped(self) -> None:
        """A step's callback ran."""
        if self.on:
            self.last_step = time.time_ns()
            self.first_step = self.first_step or self.last_step

    def end(self, runs: Sequence[JobRun], error: str | None = None) -> None:
        """The batch ended, or failed with `error`: each run's queue wait, load, denoise and decode spans
        (a failure marks the phase it happened in, and no later one is written)."""
        if not self.on:
            return
        ended = time.time_ns()
        stepped = self.first_step > 0
        denoise_start = max(self.started, self.first_step - _ns(self.first_step_seconds or 0.0)) if stepped else ended
        for run in runs:
            trace, size = run.trace, {"diffusion.attempt": run.attempt, "diffusion.batch_jobs": len(runs)}
            trace.phase("queue_wait", _ns(run.payload.created_at), _ns(run.started_at), size)
            trace.phase("load", self.started, denoise_start, size, None if stepped else error)
            if stepped:
                steps = {"diffusion.steps": run.payload.params.num_inference_steps, **size}
                trace.phase("denoise", denoise_start, ended if error else self.last_step, steps, error)
            if stepped and error is None:
                trace.phase("decode", self.last_step, ended, size)


NO_TRACE = JobTrace(Tracing())  # what a job run holds until it starts, and always while tracing is off
