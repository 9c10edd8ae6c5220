"""The limits of a generation, checked at the API before anything is queued: the service's and the model's own."""

from __future__ import annotations

from app.errors import InvalidRequest
from app.settings import ApiSettings
from contract.jobs import GenerationParams, LoraSpec
from contract.models import ModelInfo


def check_limits(p: GenerationParams, s: ApiSettings) -> None:
    """Each configured limit; the first violation raises InvalidRequest naming its field."""
    if len(p.prompt) > s.max_prompt_chars:
        raise InvalidRequest(f"prompt is {len(p.prompt)} characters; at most {s.max_prompt_chars}", "prompt")
    if p.negative_prompt is not None and len(p.negative_prompt) > s.max_prompt_chars:
        raise InvalidRequest(f"negative_prompt is over {s.max_prompt_chars} characters", "negative_prompt")
    for name, side in (("width", p.width), ("height", p.height)):
        if not s.min_image_side <= side <= s.max_image_side or side % 8:
            raise InvalidRequest(
                f"{name} must be a multiple of 8 from {s.min_image_side} to {s.max_image_side}; got {side}", name
            )
    if p.width * p.height > s.max_image_pixels:
        raise InvalidRequest(f"width*height is {p.width * p.height} pixels; at most {s.max_image_pixels}", "width")
    if p.num_inference_steps > s.max_inference_steps:
        raise InvalidRequest(f"num_inference_steps must be at most {s.max_inference_steps}", "num_inference_steps")
    if p.guidance_scale > s.max_guidance_scale:
        raise InvalidRequest(f"guidance_scale must be at most {s.max_guidance_scale}", "guidance_scale")
    if p.num_images > s.max_images_per_request:
        raise InvalidRequest(f"num_images must be at most {s.max_images_per_request}", "num_images")


def check_model_limits(p: GenerationParams, model: str, info: ModelInfo | None) -> None:
    """Limits of the model itself, as its worker published them: steps, guidance, scheduler, ControlNets."""
    if info is None:
        return
    if info.max_steps is not None and p.num_inference_steps > info.max_steps:
        raise InvalidRequest(f"model {model!r} takes at most {info.max_steps} steps", "num_inference_steps")
    if info.fixed_guidance_scale is not None and p.guidance_scale != info.fixed_guidance_scale:
        raise InvalidRequest(
            f"model {model!r} runs with guidance_scale {info.fixed_guidance_scale} only", "guidance_scale"
        )
    if p.scheduler is not None and p.scheduler not in info.schedulers:
        raise InvalidRequest(
            f"scheduler {p.scheduler!r} does not fit model {model!r}; valid: {', '.join(info.schedulers)}", "scheduler"
        )
    if p.controlnet is not None and p.controlnet not in info.controlnets:
        raise InvalidRequest(
            f"ControlNet {p.controlnet!r} is not configured for model {model!r}; available: "
            f"{', '.join(info.controlnets) or 'none'}",
            "controlnet",
        )


def check_loras(requested: list[LoraSpec], model: str, info: ModelInfo | None, max_per_request: int) -> None:
    """LoRAs of a request: at most `max_per_request` (or the model's own limit), each named once, each fitting."""
    # A compiled worker combines at most as many adapters as it has hot-swap slots.
    limit = min(max_per_request, (info.max_loras if info else None) or max_per_request)
    if len(requested) > limit:
        raise InvalidRequest(f"at most {limit} LoRAs per request for model {model!r}", "loras")
    if len({lora.name for lora in requested}) != len(requested):
        raise InvalidRequest("a LoRA is named twice", "loras")
    fitting = {lora.name for lora in info.loras} if info else set()
    for index, lora in enumerate(requested):
        if lora.name not in fitting:
            raise InvalidRequest(
                f"LoRA {lora.name!r} is unknown or does not fit model {model!r}; "
                f"available: {', '.join(sorted(fitting)) or 'none'}",
                f"loras.{index}.name",
            )
