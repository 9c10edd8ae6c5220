"""The job function RQ jobs name. The API enqueues `worker.tasks.generate` by dotted path; a worker refuses
any other function (`rqworker.SafeJob`) and runs ours through its batch runner, never by calling it."""

from __future__ import annotations

from typing import Any


def generate(payload: dict[str, Any]) -> dict[str, object]:
    """A generation job; only `python -m worker` runs it (see `worker.rqworker.GPUWorker.execute_job`)."""
    raise RuntimeError("worker.tasks.generate runs only inside `python -m worker`, through its batch runner")
