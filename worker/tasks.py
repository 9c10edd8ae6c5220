"""The job function RQ calls by dotted path, bound at start-up to this process's warm runner."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from contract.jobs import JobPayload
from worker.failures import EXIT_DEVICE_LOST, DeviceLost
from worker.runner import Runner

log = logging.getLogger(__name__)

_runner: Runner | None = None
_heartbeat: Callable[[], None] = lambda: None  # noqa: E731


def install(runner: Runner, heartbeat: Callable[[], None]) -> None:
    """Bind the warm runner and the RQ heartbeat of this worker process."""
    global _runner, _heartbeat
    _runner, _heartbeat = runner, heartbeat


def generate(payload: dict[str, Any]) -> dict[str, object]:
    """Run one generation job (RQ entry point; the API enqueues `worker.tasks.generate`)."""
    if _runner is None:
        raise RuntimeError("worker.tasks.generate runs only inside `python -m worker` (no warm pipeline here)")
    try:
        return _runner.run(JobPayload.model_validate(payload), _heartbeat)
    except DeviceLost:
        # The CUDA context is corrupt: exit now; the job stays started and is re-queued on another
        # worker once its heartbeat lapses, exactly like a crash.
        log.critical("unrecoverable CUDA error; exiting", exc_info=True)
        os._exit(EXIT_DEVICE_LOST)
