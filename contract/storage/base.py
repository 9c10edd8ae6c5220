"""The storage interface both processes program against; each backend is one class implementing it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class StorageError(Exception):
    """The store failed or refused (disk full, network, credentials): the job fails with `storage_error`."""


class ObjectMissing(StorageError):
    """No object under that key (never written, or deleted by retention)."""


class Storage(Protocol):
    """Where input and output images live, addressed by keys of the shape `contract.storage.naming` checks."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store an object whole (readers never see part of it)."""

    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissing if there is none."""

    def delete(self, key: str) -> None:
        """Remove one object; no error if there is none."""

    def delete_job(self, job_id: str) -> None:
        """Remove every object of a job; no error if there are none."""

    def url(self, key: str, expires_at: int) -> str | None:
        """A URL the client can fetch the object from directly until `expires_at`, or None: the API serves it."""

    def jobs_older_than(self, cutoff: float) -> Iterator[str]:
        """Ids of jobs with objects last written before `cutoff` (epoch seconds), for retention."""
