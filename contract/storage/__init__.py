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


def open_storage(url: str) -> Storage:
    """The backend a storage URL names: `file:///path`, or a bare path, is a local directory."""
    if url.startswith("file://"):
        return LocalStorage(Path(url.removeprefix("file://")))
    if "://" in url:
        raise ValueError(f"unsupported storage URL {url!r}: use a directory path or file://")
    return LocalStorage(Path(url))
