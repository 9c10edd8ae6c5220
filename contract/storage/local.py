"""Images as files under one directory: the default backend, for one host (or a shared volume)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from contract.storage.base import ObjectMissing, StorageError
from contract.storage.naming import JOB_ID_PATTERN, check_job_id, check_key


class LocalStorage:
    """Objects as files under `root`; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:  # belt and braces: the key pattern already allows no `..`
            raise StorageError(f"key {key!r} leaves the storage root")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write an object so that readers see either nothing or the whole file."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {key}: {exc.strerror}") from exc
            raise

    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissing if there is none."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        """Remove one object; no error if there is none."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror}") from exc

    def delete_job(self, job_id: str) -> None:
        """Remove every object of a job (a failed half-way job, retention, DELETE)."""
        shutil.rmtree(self.root / check_job_id(job_id), ignore_errors=True)

    def url(self, key: str, expires_at: int) -> str | None:
        """No direct URL: the API serves local files itself."""
        return None

    def jobs_older_than(self, cutoff: float) -> Iterator[str]:
        """Jobs whose directory was last written before `cutoff` (epoch seconds)."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if JOB_ID_PATTERN.match(folder.name) and folder.stat().st_mtime < cutoff:
                yield folder.name
