"""Storage keys are checked before any path is built; writes are all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.storage import InvalidKey, LocalStorage, content_type_of, image_key

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
    with pytest.raises(InvalidKey):
        LocalStorage(tmp_path).path(key)


def test_put_is_atomic_and_readable(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = image_key(JOB, 0, "png")
    storage.put(key, b"abc")
    assert storage.path(key).read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / JOB).iterdir()] == ["0.png"], "no temp files left behind"
    assert content_type_of(key) == "image/png"
    storage.delete_job(JOB)
    assert not storage.exists(key)


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path)

    def boom(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        storage.put(image_key(JOB, 0, "png"), b"abc")
    assert list((tmp_path / JOB).iterdir()) == []
