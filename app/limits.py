"""The configured limits of a generation, checked at the API before anything is queued."""

from __future__ import annotations

from app.config import ApiSettings
from app.errors import InvalidRequest
from contract.jobs import GenerationParams


def check_limits(p: GenerationParams, s: ApiSettings) -> None:
    """Each configured limit, checked before anything is queued; the first violation names its field."""
    if len(p.prompt) > s.max_prompt_chars:
        raise InvalidRequest(f"prompt is {len(p.prompt)} characters; at most {s.max_prompt_chars}", "prompt")
    if p.negative_prompt is not None and len(p.negative_prompt) > s.max_prompt_chars:
        raise InvalidRequest(f"negative_prompt is over {s.max_prompt_chars} characters", "negative_prompt")
    for name, side in (("width", p.width), ("height", p.height)):
        if not s.min_image_side <= side <= s.max_image_side or side % 8:
            raise InvalidRequest(
                f"{name} must be a multiple of 8 from {s.min_image_side} to {s.max_image_side}; got {side}", name)
    if p.width * p.height > s.max_image_pixels:
        raise InvalidRequest(f"width*height is {p.width * p.height} pixels; at most {s.max_image_pixels}", "width")
    if p.num_inference_steps > s.max_inference_steps:
        raise InvalidRequest(f"num_inference_steps must be at most {s.max_inference_steps}", "num_inference_steps")
    if p.guidance_scale > s.max_guidance_scale:
        raise InvalidRequest(f"guidance_scale must be at most {s.max_guidance_scale}", "guidance_scale")
    if p.num_images > s.max_images_per_request:
        raise InvalidRequest(f"num_images must be at most {s.max_images_per_request}", "num_images")
