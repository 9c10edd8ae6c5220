"""Image storage: the `Storage` interface, its backends, and the one place that picks a backend from a URL."""

from __future__ import annotations

from pathlib import Path

from contract.storage.base import ObjectMissing, Storage, StorageError
from contract.storage.local import LocalStorage
from contract.storage.naming import (
    JOB_ID_PATTERN,
    InvalidKey,
    content_type_of,
    image_key,
    input_key,
    is_output,
    job_of,
)

__all__ = [
    "JOB_ID_PATTERN",
    "InvalidKey",
    "LocalStorage",
    "ObjectMissing",
    "Storage",
    "StorageError",
    "content_type_of",
    "image_key",
    "input_key",
    "is_output",
    "job_of",
    "open_storage",
]


def open_storage(url: str, timeout_seconds: float = 5.0, retries: int = 2) -> Storage:
    """The backend a storage URL names: `s3://bucket/prefix` an object store; `file:///path`, or a bare path,
    a local directory. `timeout_seconds` and `retries` bound every call to an object store."""
    if url.startswith("s3://"):
        from contract.storage.s3 import S3Storage  # obstore only where an object store is used

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3Storage(bucket, prefix, timeout_seconds=timeout_seconds, retries=retries)
    if url.startswith("file://"):
        return LocalStorage(Path(url.removeprefix("file://")))
    if "://" in url:
        raise ValueError(f"unsupported storage URL {url!r}: use s3://bucket/prefix, a directory path or file://")
    return LocalStorage(Path(url))
