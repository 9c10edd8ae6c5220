"""From a request body to fully resolved job parameters: defaults, input images, and every limit.

`resolve_params` is pure (no I/O) so each rule is unit-tested; `Resolver` adds what needs the
outside world: the served models and their published facts, ready workers, webhook address checks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from PIL import Image

from app import inputs, ssrf
from app.catalog import Catalog
from app.errors import InvalidRequest, ServiceUnavailable
from app.limits import check_limits, check_loras, check_model_limits
from app.schemas import GenerationCreate
from app.settings import ApiSettings
from contract.jobs import SEED_MODULUS, GenerationInputs, GenerationParams
from contract.models import ModelInfo
from contract.settings import ModelEntry

DEFAULT_STRENGTH = 0.8


@dataclass(frozen=True)
class Resolved:
    """A checked request: the model, its resolved parameters and its decoded input images (by input name)."""

    model: str
    params: GenerationParams
    images: dict[str, Image.Image]


@dataclass(frozen=True)
class Defaults:
    """What a request leaves out: from the model's worker (published), else its models-file entry and the
    service's generic steps and guidance. The size has no generic default: a 512x512 job on a 64x64
    model is a mistake, not a default."""

    width: int | None
    height: int | None
    steps: int
    guidance_scale: float
    scheduler: str | None

    @classmethod
    def of(cls, info: ModelInfo | None, entry: ModelEntry | None, s: ApiSettings) -> Defaults:
        """The defaults of one model."""
        if info is not None:
            return cls(info.width, info.height, info.default_steps, info.default_guidance_scale, info.scheduler)
        entry = entry or ModelEntry()
        guidance = (
            entry.fixed_guidance_scale if entry.fixed_guidance_scale is not None else entry.default_guidance_scale
        )
        return cls(
            entry.width,
            entry.height,
            entry.default_steps or s.default_inference_steps,
            s.default_guidance_scale if guidance is None else guidance,
            entry.default_scheduler,
        )


def _size(body: GenerationCreate, model: str, defaults: Defaults, images: dict[str, Image.Image]) -> tuple[int, int]:
    width, height = body.width, body.height
    sized = images.get("init") or images.get("control")
    if sized is not None:
        if (width or sized.width, height or sized.height) != sized.size:
            raise InvalidRequest(
                f"width and height must match the input image ({sized.width}x{sized.height}) or be omitted", "width"
            )
        return sized.size
    width, height = width or defaults.width, height or defaults.height
    if width is None or height is None:
        raise ServiceUnavailable(
            f"model {model!r} has no known native size yet (no worker of it has started, and the models file "
            "gives none): pass width and height, or retry once a worker is up",
            "width",
            headers={"Retry-After": "10"},
        )
    return width, height


def resolve_params(
    body: GenerationCreate,
    model: str,
    info: ModelInfo | None,
    s: ApiSettings,
    images: dict[str, Image.Image],
    entry: ModelEntry | None = None,
) -> GenerationParams:
    """Fill every default (the request's, then the input image's size, then the model's) and check every
    limit; raises InvalidRequest naming the field."""
    defaults = Defaults.of(info, entry, s)
    width, height = _size(body, model, defaults, images)
    params = GenerationParams(
        **{
            # Fields declared once in GenerationInputs pass through as they are.
            **body.model_dump(include=set(GenerationInputs.model_fields)),
            "num_images": body.num_images,
            "width": width,
            "height": height,
            "num_inference_steps": body.num_inference_steps or defaults.steps,
            "guidance_scale": body.guidance_scale if body.guidance_scale is not None else defaults.guidance_scale,
            "seed": body.seed if body.seed is not None else secrets.randbelow(SEED_MODULUS),
            "scheduler": body.scheduler or defaults.scheduler,
            "strength": (body.strength or DEFAULT_STRENGTH) if "init" in images else body.strength,
        }
    )
    check_limits(params, s)
    check_loras(params.loras, model, info, s.max_loras_per_request)
    check_model_limits(params, model, info)
    if body.timeout_seconds is not None and body.timeout_seconds > s.job_timeout_seconds:
        raise InvalidRequest(f"timeout_seconds must be at most {s.job_timeout_seconds}", "timeout_seconds")
    if body.webhook_events is not None and body.webhook_url is None:
        raise InvalidRequest("webhook_events needs a webhook_url", "webhook_events")
    return params


class Resolver:
    """Resolves and checks requests against the served models and the configured limits."""

    def __init__(self, settings: ApiSettings, catalog: Catalog) -> None:
        self.settings, self.catalog = settings, catalog

    def model_of(self, body: GenerationCreate) -> str:
        """The served model a request names (the default if none); 422 for others, 503 without a warm worker."""
        model = body.model or self.settings.default_model
        if model not in self.catalog.names:
            raise InvalidRequest(f"unknown model {model!r}; served models: {', '.join(self.catalog.names)}", "model")
        if self.settings.require_ready_worker and self.catalog.ready_workers(model) == 0:
            raise ServiceUnavailable(
                f"model {model!r} is served, but no worker for it is ready now; retry shortly",
                "model",
                headers={"Retry-After": "10"},
            )
        return model

    def resolve(self, body: GenerationCreate) -> Resolved:
        """Everything a job needs, checked; raises InvalidRequest naming the field, or ServiceUnavailable."""
        images = inputs.from_request(body, self.settings)
        model = self.model_of(body)
        entry = self.settings.model_entries.get(model)
        params = resolve_params(body, model, self.catalog.info(model), self.settings, images, entry)
        if body.webhook_url is not None:
            if self.settings.webhook_secret is None:
                raise InvalidRequest("webhooks are not enabled on this server (no signing secret)", "webhook_url")
            try:
                ssrf.check_url(body.webhook_url, self.settings.webhook_allowed_networks)
            except ssrf.WebhookRefused as exc:
                raise InvalidRequest(str(exc), "webhook_url") from None
        return Resolved(model, params, images)
