"""Input images (image-to-image, inpainting): decoded safely at the API, so a worker never gets a bad one.

Allow-listed formats only (PNG, JPEG, WebP), the pixel cap checked from the header before any
pixel is decoded (which also stops decompression bombs), truncated and animated files refused,
sizes checked against the request; every refusal is a 422 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image

from app.errors import InvalidRequest
from app.schemas import GenerationCreate
from app.settings import ApiSettings

ALLOWED = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,")


def decode(value: str, field: str, settings: ApiSettings, mode: str = "RGB") -> Image.Image:
    """Base64 (or a base64 data URL) -> a fully decoded image in `mode`; InvalidRequest naming `field`."""
    match = DATA_URL.match(value)
    if match:
        if match["mime"] not in ALLOWED.values():
            raise InvalidRequest(f"{field}: {match['mime']} is not allowed; use PNG, JPEG or WebP", field)
        value = value[match.end() :]
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field} is not valid base64", field) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.format not in ALLOWED:
                raise InvalidRequest(
                    f"{field}: {image.format or 'unknown'} images are not allowed; use PNG, JPEG or WebP", field
                )
            if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                raise InvalidRequest(f"{field}: animated images are not allowed", field)
            width, height = image.size
            if width * height > settings.max_image_pixels:
                raise InvalidRequest(f"{field} is {width}x{height}; at most {settings.max_image_pixels} pixels", field)
            image.load()
    except InvalidRequest:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest(f"{field} cannot be decoded (truncated or corrupt)", field) from None
    return image.convert(mode)


def check_size(image: Image.Image, field: str, settings: ApiSettings) -> None:
    """Input images must have a size the models take: multiples of 8 within the configured bounds."""
    for side in image.size:
        if side % 8 or not settings.min_image_side <= side <= settings.max_image_side:
            raise InvalidRequest(
                f"{field} is {image.width}x{image.height}; each side must be a multiple of 8 "
                f"from {settings.min_image_side} to {settings.max_image_side}",
                field,
            )


def to_png(image: Image.Image) -> bytes:
    """Lossless re-encoding of a decoded input, as the worker will read it."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def from_request(body: GenerationCreate, s: ApiSettings) -> dict[str, Image.Image]:
    """The request's input images, decoded and checked: `init` (+ `mask`) or `control`; {} for none."""
    if (body.controlnet is None) != (body.control_image is None):
        raise InvalidRequest("controlnet and control_image go together", "control_image")
    if body.controlnet is not None:
        if body.init_image is not None:
            raise InvalidRequest("a ControlNet cannot be combined with init_image yet", "controlnet")
        control = decode(body.control_image or "", "control_image", s)
        check_size(control, "control_image", s)
        return {"control": control}
    if body.init_image is None:
        for name in ("mask_image", "strength"):
            if getattr(body, name) is not None:
                raise InvalidRequest(f"{name} needs an init_image", name)
        return {}
    images = {"init": decode(body.init_image, "init_image", s)}
    check_size(images["init"], "init_image", s)
    if body.mask_image is not None:
        images["mask"] = decode(body.mask_image, "mask_image", s, mode="L")
        if images["mask"].size != images["init"].size:
            raise InvalidRequest("mask_image must have the size of init_image", "mask_image")
    return images
