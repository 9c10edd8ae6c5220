"""The one place that decides what a failure during a job means: the client's fault, ours, or fatal to the process.

- The client's input (`invalid_input`): only errors our own checks raise, recognised by class
  (`InvalidInput` and its subclasses). A ValueError from anywhere else is a bug of ours.
- The job's outcome, not a bug: out of GPU memory, non-finite output, the store failing, timeout.
- Fatal: a CUDA error after which the device context is unusable; the process must exit so its
  supervisor restarts it, and the job is re-run elsewhere like after a crash.
- Everything else: `internal_error`, logged with its traceback; the job is not retried (it would
  fail the same way) and the worker carries on.
"""

from __future__ import annotations

import torch

from contract.jobs import JobError, JobErrorType
from contract.storage import StorageError

# Messages of CUDA errors after which the context is unusable: the process must go.
STICKY_CUDA = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "CUDA error: an illegal instruction",
)
EXIT_DEVICE_LOST = 70


class InvalidInput(Exception):
    """The job's input cannot run on this worker (raised by our own checks only)."""


class BadOutput(RuntimeError):
    """The pipeline produced non-finite pixels (fp16 overflow): a black image is never stored."""


class JobFailed(Exception):
    """A failure that ends the job with this client-facing error."""

    def __init__(self, type_: JobErrorType, message: str) -> None:
        super().__init__(message)
        self.error = JobError(type=type_, message=message)


class DeviceLost(Exception):
    """The device is unusable (a sticky CUDA error): the worker process must exit."""


def is_fatal(exc: BaseException) -> bool:
    """Whether the process can no longer use its device after `exc`."""
    return any(marker in str(exc) for marker in STICKY_CUDA)


def classify(exc: Exception) -> JobError:
    """The client-facing error a failed job ends with; raises DeviceLost when the process must exit."""
    if is_fatal(exc):
        raise DeviceLost(str(exc)) from exc
    if isinstance(exc, JobFailed):
        return exc.error
    if isinstance(exc, InvalidInput):
        return JobError(type=JobErrorType.INVALID_INPUT, message=f"the job's input cannot run here: {exc}")
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return JobError(
            type=JobErrorType.OUT_OF_MEMORY, message="the GPU ran out of memory; try fewer images or a smaller size"
        )
    if isinstance(exc, BadOutput):
        return JobError(type=JobErrorType.BAD_OUTPUT, message=str(exc))
    if isinstance(exc, StorageError):
        return JobError(type=JobErrorType.STORAGE_ERROR, message=f"the image store failed: {exc}")
    return JobError(type=JobErrorType.INTERNAL_ERROR, message="the worker hit an internal error; it has been logged")
