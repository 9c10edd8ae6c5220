"""One place decides what a failure means: the client's input, the job's outcome, our bug, or fatal."""

from __future__ import annotations

import pytest
import torch

from contract.jobs import JobErrorType
from contract.storage import ObjectMissing, StorageError
from worker.failures import BadOutput, DeviceLost, JobFailed, classify
from worker.loras import LoraError
from worker.schedulers import UnknownScheduler


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (UnknownScheduler("scheduler 'x' does not fit"), JobErrorType.INVALID_INPUT),
        (LoraError("LoRA 'x' does not fit"), JobErrorType.INVALID_INPUT),
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), JobErrorType.OUT_OF_MEMORY),
        (BadOutput("non-finite pixels"), JobErrorType.BAD_OUTPUT),
        (StorageError("disk full"), JobErrorType.STORAGE_ERROR),
        (ObjectMissing("abc/init.png"), JobErrorType.STORAGE_ERROR),
        (JobFailed(JobErrorType.TIMEOUT, "ran over"), JobErrorType.TIMEOUT),
        # Our own bugs are ours, whatever their class: never blamed on the client's input.
        (ValueError("shapes do not match"), JobErrorType.INTERNAL_ERROR),
        (TypeError("unexpected keyword"), JobErrorType.INTERNAL_ERROR),
        (KeyError("latents"), JobErrorType.INTERNAL_ERROR),
    ],
)
def test_each_failure_maps_to_one_error_type(exc: Exception, expected: JobErrorType) -> None:
    assert classify(exc).type == expected


def test_internal_errors_do_not_leak_details() -> None:
    assert "shapes" not in classify(ValueError("shapes do not match")).message


@pytest.mark.parametrize("message", ["CUDA error: an illegal memory access was encountered", "device-side assert"])
def test_sticky_cuda_errors_are_fatal(message: str) -> None:
    with pytest.raises(DeviceLost):
        classify(RuntimeError(message))
