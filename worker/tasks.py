"""The job function RQ calls by dotted path, bound at start-up to this process's warm runner."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from contract.jobs import JobError, JobErrorType, JobPayload
from worker.runner import Runner

log = logging.getLogger(__name__)

_runner: Runner | None = None
_heartbeat: Callable[[], None] = lambda: None  # noqa: E731

# Messages of CUDA errors after which the context is unusable: the process must go.
_STICKY_CUDA = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "CUDA error: an illegal instruction",
)
EXIT_DEVICE_LOST = 70


def install(runner: Runner, heartbeat: Callable[[], None]) -> None:
    """Bind the warm runner and the RQ heartbeat of this worker process."""
    global _runner, _heartbeat
    _runner, _heartbeat = runner, heartbeat


def generate(payload: dict[str, Any]) -> dict[str, object]:
    """Run one generation job (RQ entry point; the API enqueues `worker.tasks.generate`)."""
    if _runner is None:
        raise RuntimeError("worker.tasks.generate runs only inside `python -m worker` (no warm pipeline here)")
    job = JobPayload.model_validate(payload)
    try:
        return _runner.run(job, _heartbeat)
    except Exception as exc:
        if any(marker in str(exc) for marker in _STICKY_CUDA):
            # The CUDA context is corrupt: exit now; the job stays started and is re-queued on
            # another worker once its heartbeat lapses, exactly like a crash.
            log.critical("unrecoverable CUDA error; exiting", exc_info=True)
            os._exit(EXIT_DEVICE_LOST)
        # A bug, not a lost worker: fail this job (retrying would fail the same way) and carry on.
        log.exception("job crashed")
        _runner.store.fail(
            job.job_id,
            JobError(type=JobErrorType.INTERNAL_ERROR, message="the worker hit an internal error; it has been logged"),
        )
        return {"failed": JobErrorType.INTERNAL_ERROR.value}
