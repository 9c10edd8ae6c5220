"""Every Redis key and queue name the processes share, and the one job function a worker will run.

Nothing else builds a key name: a rename here is a rename everywhere.
"""

from __future__ import annotations

# The API enqueues this dotted path; the worker refuses any other function.
GENERATE_FUNCTION = "worker.tasks.generate"
ALLOWED_FUNCTIONS = frozenset({GENERATE_FUNCTION})

PRIORITIES = ("high", "normal", "low")


def queue_name(prefix: str, model: str, priority: str = "normal") -> str:
    """RQ queue of one model and priority; a worker listens on its model's queues, highest first."""
    base = f"{prefix}.generate.{model}"
    return base if priority == "normal" else f"{base}.{priority}"


def queue_names(prefix: str, model: str) -> list[str]:
    """All queues of a model, in the order a worker takes from them."""
    return [queue_name(prefix, model, p) for p in PRIORITIES]


def job_key(prefix: str, job_id: str) -> str:
    """Redis hash holding our record of a job."""
    return f"{prefix}:job:{job_id}"


def model_info_key(prefix: str, model: str) -> str:
    """Redis string where a ready worker publishes its model's facts (`contract.models.ModelInfo`)."""
    return f"{prefix}:model-info:{model}"


def events_key(prefix: str, job_id: str) -> str:
    """Redis stream of a job's state changes: what SSE replays (stream ids are event ids)."""
    return f"{prefix}:events:{job_id}"


def index_key(prefix: str, owner: str | None = None, status: str | None = None) -> str:
    """Sorted set of job ids by creation time, for listing and retention: every job, or one owner's, or
    those of one status (of one owner). The status sets are kept by the record's transition script."""
    key = f"{prefix}:jobs" if owner is None else f"{prefix}:jobs:owner:{owner}"
    return key if status is None else f"{key}:status:{status}"


def active_jobs_key(prefix: str, owner: str) -> str:
    """Set of an API key's jobs that are queued or running (its concurrency quota counts them)."""
    return f"{prefix}:active:{owner}"


def idempotency_key(prefix: str, digest: str) -> str:
    """Which job an Idempotency-Key created, and a hash of the body it came with."""
    return f"{prefix}:idem:{digest}"


def step_rate_key(prefix: str, model: str) -> str:
    """Measured seconds per step and megapixel-image, and per-job overhead, of a model (for ETAs)."""
    return f"{prefix}:step-rates:{model}"


def webhook_stream_key(prefix: str) -> str:
    """Redis stream of state changes of jobs that have a webhook; the API's dispatcher consumes it."""
    return f"{prefix}:webhook-events"


def webhook_retry_key(prefix: str) -> str:
    """Sorted set of webhook deliveries waiting for a retry, scored by when they are due."""
    return f"{prefix}:webhook-retries"


def webhook_log_key(prefix: str, job_id: str) -> str:
    """Redis list of a job's webhook delivery attempts and their outcomes."""
    return f"{prefix}:webhook-log:{job_id}"


def webhook_throttle_key(prefix: str, job_id: str) -> str:
    """Short-lived marker: a progress webhook of this job went out within the last second."""
    return f"{prefix}:webhook-throttle:{job_id}"


def deadlines_key(prefix: str) -> str:
    """Sorted set of queued jobs with a time-to-start deadline, scored by that deadline."""
    return f"{prefix}:deadlines"


def lock_key(prefix: str, task: str) -> str:
    """A housekeeping task's lock: one API replica runs it at a time."""
    return f"{prefix}:lock:{task}"


def api_keys_key(prefix: str) -> str:
    """Hash of API keys by name: each a JSON record with the SHA-256 of its secret, never the key itself."""
    return f"{prefix}:api-keys"


def api_key_ids_key(prefix: str) -> str:
    """Hash from an API key's public id (the part of the key before its secret) to its name."""
    return f"{prefix}:api-key-ids"


def request_log_key(prefix: str, owner: str) -> str:
    """Sorted set of an API key's recent job-creating requests (its requests-per-minute window)."""
    return f"{prefix}:requests:{owner}"
