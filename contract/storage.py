"""Image storage on a local directory, addressed by keys that are checked before any path is built."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

# `<32 hex job id>/<index>.<ext>`: the only shape a key may have. Nothing a client sends is
# used as a path without matching this first.
KEY_PATTERN = re.compile(r"^(?P<job>[0-9a-f]{32})/(?P<name>([0-9]{1,3}|init|mask|control)\.(?P<ext>png|jpeg|webp))$")
# Input images a request brought (image-to-image, inpainting); never served back.
INPUT_NAMES = ("init", "mask", "control")
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class InvalidKey(ValueError):
    """A key that does not name an image this service could have written."""


def image_key(job_id: str, index: int, ext: str) -> str:
    """Key of image `index` of a job."""
    key = f"{job_id}/{index}.{ext}"
    if not KEY_PATTERN.match(key):
        raise InvalidKey(key)
    return key


def input_key(job_id: str, name: str) -> str:
    """Key of an input image (`init` or `mask`) of a job."""
    return image_key(job_id, 0, "png").replace("/0.png", f"/{name}.png")


def is_output(key: str) -> bool:
    """Whether a key names an output image (inputs are never served)."""
    match = KEY_PATTERN.match(key)
    return bool(match) and match["name"].split(".")[0] not in INPUT_NAMES  # type: ignore[index]


def content_type_of(key: str) -> str:
    """MIME type of a stored image, from its key."""
    match = KEY_PATTERN.match(key)
    if not match:
        raise InvalidKey(key)
    return CONTENT_TYPES[match["ext"]]


class LocalStorage:
    """Images as files under one root directory; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        """File of a key; raises InvalidKey for anything that is not a well-formed key."""
        if not KEY_PATTERN.match(key):
            raise InvalidKey(key)
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise InvalidKey(key)
        return path

    def put(self, key: str, data: bytes) -> None:
        """Write an image so that readers see either nothing or the whole file."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        """Whether the image is stored."""
        return self.path(key).is_file()

    def delete_job(self, job_id: str) -> None:
        """Remove every image of a job (used when a job fails half-way and by retention)."""
        if not JOB_ID_PATTERN.match(job_id):
            raise InvalidKey(job_id)
        shutil.rmtree(self.root / job_id, ignore_errors=True)
