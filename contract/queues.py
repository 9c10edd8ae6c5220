"""Queue and key names, and the one job function a worker will run."""

from __future__ import annotations

# The API enqueues this dotted path; the worker refuses any other function.
GENERATE_FUNCTION = "worker.tasks.generate"
ALLOWED_FUNCTIONS = frozenset({GENERATE_FUNCTION})


def queue_name(prefix: str, model: str) -> str:
    """RQ queue of one model: each worker serves one model and listens on its queue."""
    return f"{prefix}.generate.{model}"


def job_key(prefix: str, job_id: str) -> str:
    """Redis hash holding our record of a job."""
    return f"{prefix}:job:{job_id}"


def model_info_key(prefix: str, model: str) -> str:
    """Redis string where a ready worker publishes its model's facts (native size, pipeline class)."""
    return f"{prefix}:model:{model}"
