"""API process settings (environment variables `DIFFUSION_*`, see the README)."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from app.auth import is_loopback
from contract.settings import CommonSettings, ModelEntry, read_models_file


class ApiSettings(CommonSettings):
    """Everything the API reads from the environment, with units in the names."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_base_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    url_signing_secret: SecretStr | None = None
    # Secrets of earlier rotations: URLs they signed keep verifying until they expire.
    url_signing_previous_secrets: list[SecretStr] = Field(default_factory=list)
    # `required`: every API route needs a key; `off`: none does; `auto`: required unless the API listens
    # only on loopback (as Redis's protected mode does).
    auth: Literal["required", "off", "auto"] = "auto"
    default_requests_per_minute: int = Field(
        default=600, ge=0, description="Per key, job-creating requests; 0 = no limit."
    )
    default_max_active_jobs: int = Field(default=100, ge=0, description="Per key, queued or running; 0 = no limit.")
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="0: /metrics on the API port (admin key when auth is on)."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins browsers may call the API from.")
    image_url_ttl_seconds: int = Field(default=3600, ge=1)
    # How clients get image bytes: see the README's Storage section.
    image_delivery: Literal["proxy", "redirect", "presigned"] = "proxy"
    image_redirect_ttl_seconds: int = Field(default=60, ge=1, le=3600)
    served_models: list[str] = Field(default_factory=list)

    max_prompt_chars: int = Field(default=2000, ge=1)
    min_image_side: int = Field(default=64, ge=8)
    max_image_side: int = Field(default=2048, ge=8)
    max_image_pixels: int = Field(default=1536 * 1536, ge=64)
    max_inference_steps: int = Field(default=100, ge=1, le=100_000)
    max_images_per_request: int = Field(default=8, ge=1)
    max_guidance_scale: float = Field(default=30.0, ge=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_queue_depth: int = Field(default=1000, ge=1)
    queue_full_retry_after_seconds: int = Field(default=10, ge=1)

    # Used when no worker has published its model's own defaults yet (sizes come from the models file).
    default_inference_steps: int = Field(default=25, ge=1)
    default_guidance_scale: float = Field(default=7.5, ge=0)

    max_loras_per_request: int = Field(default=4, ge=0)
    job_retries: int = Field(default=2, ge=0, le=10)
    require_ready_worker: bool = True
    webhook_secret: SecretStr | None = None
    webhook_allowed_networks: list[str] = Field(default_factory=list)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_window_seconds: int = Field(default=7200, ge=0)
    webhook_senders: int = Field(default=8, ge=1)
    sweep_interval_seconds: int = Field(default=300, ge=1)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    max_event_streams: int = Field(default=1000, ge=1, description="Event streams one API process follows at once.")
    max_long_polls: int = Field(default=64, ge=1, description="OpenAI-style requests waiting for their job at once.")
    redis_timeout_seconds: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> ApiSettings:
        if self.min_image_side > self.max_image_side:
            raise ValueError("min_image_side must not exceed max_image_side")
        if self.min_image_side % 8 or self.max_image_side % 8:
            raise ValueError("image side bounds must be multiples of 8")
        return self

    @field_validator("image_delivery")
    @classmethod
    def _delivery(cls, delivery: str, info: ValidationInfo) -> str:
        storage_url = str(info.data.get("storage_url", ""))
        if delivery != "proxy" and not storage_url.startswith("s3://"):
            raise ValueError(
                f"{delivery!r} needs an object store (DIFFUSION_STORAGE_URL=s3://...); local storage is proxy only"
            )
        if delivery == "presigned" and info.data.get("image_url_ttl_seconds", 0) > 7 * 24 * 3600:
            raise ValueError("presigned store URLs live at most 7 days: lower DIFFUSION_IMAGE_URL_TTL_SECONDS")
        return delivery

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network)  # raises ValueError, reported with the variable name
        return networks

    @property
    def auth_required(self) -> bool:
        """Whether requests need an API key (`auto`: unless the API listens only on loopback)."""
        if self.auth == "auto":
            return not is_loopback(self.host)
        return self.auth == "required"

    @cached_property
    def models(self) -> list[str]:
        """Model names a request may ask for: the default, DIFFUSION_SERVED_MODELS, the models file's."""
        names = [self.default_model, *self.served_models, *self.model_entries]
        return list(dict.fromkeys(names))

    @cached_property
    def model_entries(self) -> dict[str, ModelEntry]:
        """The models file's entries (read once)."""
        return read_models_file(self.models_file)
