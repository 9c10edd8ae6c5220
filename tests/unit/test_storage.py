"""Storage keys are checked before any path is built; writes are all-or-nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contract.storage import (
    InvalidKey,
    LocalStorage,
    ObjectMissing,
    StorageError,
    content_type_of,
    image_key,
    open_storage,
)

JOB = "0123456789abcdef" * 2


@pytest.mark.parametrize(
    "key",
    [
        "../x.png",
        f"{JOB}/../../x.png",
        f"/{JOB}/0.png",
        f"{JOB}/0.png/..",
        f"{JOB}\\0.png",
        f"{JOB}/0.exe",
        f"{JOB.upper()}/0.png",
        "",
        f"{JOB}/0.png\x00",
    ],
)
def test_malformed_keys_are_refused(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(InvalidKey):
        storage.put(key, b"x", "image/png")
    with pytest.raises(InvalidKey):
        storage.get(key)
    assert list(tmp_path.iterdir()) == [], "nothing was written anywhere"


def test_put_is_atomic_and_readable(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = image_key(JOB, 0, "png", 1)
    storage.put(key, b"abc", "image/png")
    assert storage.get(key) == b"abc"
    assert [p.name for p in (tmp_path / JOB).iterdir()] == ["0-1.png"], "no temp files left behind"
    assert content_type_of(key) == "image/png"
    assert list(storage.jobs_older_than(time.time() + 1)) == [JOB]
    assert list(storage.jobs_older_than(time.time() - 60)) == []
    other = image_key(JOB, 0, "png", 2)  # another attempt's image
    storage.put(other, b"def", "image/png")
    storage.delete(key)
    assert storage.get(other) == b"def", "deleting one object leaves the others"
    storage.delete(key)  # no error when already gone
    storage.delete_job(JOB)
    with pytest.raises(ObjectMissing):
        storage.get(other)
    with pytest.raises(ObjectMissing):
        storage.get(key)


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path)

    def boom(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(StorageError, match="No space left"):
        storage.put(image_key(JOB, 0, "png", 1), b"abc", "image/png")
    assert list((tmp_path / JOB).iterdir()) == []


def test_storage_urls_pick_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    from_url = open_storage(f"file://{tmp_path}")
    assert isinstance(from_url, LocalStorage) and from_url.root == tmp_path.resolve()
    with pytest.raises(ValueError, match="unsupported storage URL"):
        open_storage("ftp://host/x")
