"""Images as objects in an S3 bucket (AWS S3 or any S3-compatible store: MinIO, R2, GCS interoperability).

Credentials, region and endpoint come from the standard AWS environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, web identity,
container and instance credentials), read by obstore. Every call is bounded: a per-attempt timeout
and a few retries with backoff, so a store that is down fails a call within seconds, never hangs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import obstore
from obstore.store import S3Store

from contract.storage.base import ObjectMissing, StorageError
from contract.storage.naming import JOB_ID_PATTERN, check_job_id, check_key

# SigV4 presigned URLs live at most seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
LIST_CHUNK = 1000


def _first_line(exc: BaseException) -> str:
    """obstore's messages carry a multi-line debug dump (and the store's XML body): keep the summary."""
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


class S3Storage:
    """Objects under `s3://bucket/prefix/<job id>/<name>`; a PUT is atomic, so readers see all of an object or none."""

    def __init__(self, bucket: str, prefix: str = "", *, timeout_seconds: float = 5.0, retries: int = 2) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        timeout = timedelta(seconds=timeout_seconds)
        self._store = S3Store(
            bucket,
            prefix=self.prefix or None,
            client_options={
                # An http:// AWS_ENDPOINT_URL (a MinIO on a private network, the tests' moto) is the
                # operator's explicit choice; AWS itself is always https.
                "allow_http": True,
                "connect_timeout": timeout,
                "timeout": timeout,
            },
            retry_config={
                "max_retries": retries,
                "retry_timeout": timedelta(seconds=timeout_seconds * (retries + 1)),
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
            },
        )

    def __repr__(self) -> str:
        return f"S3Storage('s3://{self.bucket}/{self.prefix}')"

    @contextmanager
    def _errors(self, action: str, what: str) -> Iterator[None]:
        """Every failure of the client becomes StorageError (ObjectMissing for a missing key)."""
        try:
            yield
        except FileNotFoundError as exc:
            # A 404 is a missing key only for a read of a bucket that exists; a missing bucket is a
            # misconfigured store (every job would fail), not an image past its retention.
            if action != "read" or "NoSuchBucket" in str(exc):
                raise StorageError(f"cannot {action} {what}: {_first_line(exc)}") from exc
            raise ObjectMissing(what) from None
        except Exception as exc:  # obstore's errors, timeouts, refused connections: all the store's
            raise StorageError(f"cannot {action} {what}: {_first_line(exc)}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload an object whole, with its content type."""
        check_key(key)
        with self._errors("write", key):
            obstore.put(self._store, key, data, attributes={"Content-Type": content_type})

    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissing if there is none."""
        check_key(key)
        with self._errors("read", key):
            return bytes(obstore.get(self._store, key).bytes())

    def delete(self, key: str) -> None:
        """Remove one object; no error if there is none (S3 deletes are idempotent)."""
        check_key(key)
        with self._errors("delete", key):
            obstore.delete(self._store, key)

    def delete_job(self, job_id: str) -> None:
        """Remove every object under the job's prefix (inputs and outputs); no error if there are none."""
        check_job_id(job_id)
        with self._errors("delete the objects of", job_id):
            paths = [meta["path"] for batch in obstore.list(self._store, f"{job_id}/") for meta in batch]
            if paths:
                obstore.delete(self._store, paths)

    def url(self, key: str, expires_at: int) -> str | None:
        """A presigned GET URL of the object that the store honours until `expires_at` (never later)."""
        check_key(key)
        # X-Amz-Date is the signing second, which may already be the next one: one second less
        # than the difference keeps the store's expiry at `expires_at` or one second before.
        seconds = min(MAX_PRESIGN_SECONDS, max(1, expires_at - math.floor(time.time()) - 1))
        with self._errors("sign a URL for", key):
            return obstore.sign(self._store, "GET", key, timedelta(seconds=seconds))

    def jobs_older_than(self, cutoff: float) -> Iterator[str]:
        """Jobs whose newest object was written before `cutoff` (epoch seconds), listing every page of the prefix."""
        newest: dict[str, float] = {}
        with self._errors("list", f"s3://{self.bucket}/{self.prefix}"):
            for batch in obstore.list(self._store, chunk_size=LIST_CHUNK):
                for meta in batch:
                    job = meta["path"].split("/", 1)[0]
                    if JOB_ID_PATTERN.match(job):
                        newest[job] = max(newest.get(job, 0.0), meta["last_modified"].timestamp())
        yield from (job for job, written in newest.items() if written < cutoff)
