"""The shape of storage keys: checked before any backend sees one, so nothing a client sends becomes a path."""

from __future__ import annotations

import re

# `<32 hex job id>/<image index>-<attempt>.<ext>` (outputs; keys without the attempt are accepted as written
# before attempts were fenced) or `<job id>/<input name>.png`: the only shapes a key may have.
KEY_PATTERN = re.compile(
    r"^(?P<job>[0-9a-f]{32})/(?P<name>([0-9]{1,3}(-[0-9]{1,3})?|init|mask|control)\.(?P<ext>png|jpeg|webp))$"
)
# Input images a request brought (image-to-image, inpainting, ControlNet); never served back.
INPUT_NAMES = ("init", "mask", "control")
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class InvalidKey(ValueError):
    """A key that does not name an image this service could have written."""


def check_key(key: str) -> str:
    """The key itself if well-formed; raises InvalidKey otherwise."""
    if not KEY_PATTERN.match(key):
        raise InvalidKey(key)
    return key


def check_job_id(job_id: str) -> str:
    """The job id itself if well-formed (32 hex digits); raises InvalidKey otherwise."""
    if not JOB_ID_PATTERN.match(job_id):
        raise InvalidKey(job_id)
    return job_id


def image_key(job_id: str, index: int, ext: str, attempt: int) -> str:
    """Key of output image `index` of a job, as written by `attempt`: attempts never share an object."""
    return check_key(f"{job_id}/{index}-{attempt}.{ext}")


def input_key(job_id: str, name: str) -> str:
    """Key of an input image (`init`, `mask` or `control`) of a job."""
    return check_key(f"{job_id}/{name}.png")


def job_of(key: str) -> str:
    """The job id a key belongs to."""
    return check_key(key).split("/", 1)[0]


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
