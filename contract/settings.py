"""Settings shared by the API and the workers; each process extends `CommonSettings` with its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DIFFUSION_"

S = TypeVar("S", bound="CommonSettings")


class CommonSettings(BaseSettings):
    """Read from `DIFFUSION_*` environment variables (and `REDIS_URL`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_by_name=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "DIFFUSION_REDIS_URL"),
    )
    key_prefix: str = Field(default="diffusion", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    default_model: str = Field(default="shapes", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    storage_url: str = Field(
        default="var/images",
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|file://.+|[^:]+)$",
        description="Where images live: s3://bucket/prefix (credentials from the AWS environment), "
        "a directory path or file:// URL.",
    )
    # Every call to an object store is bounded: this per attempt (connect included), then retries.
    storage_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    storage_retries: int = Field(default=2, ge=0, le=10)
    job_retention_seconds: int = Field(default=24 * 3600, ge=1)
    job_timeout_seconds: int = Field(default=600, ge=1)
    models_file: Path | None = Field(default=None, description="JSON file naming the served models.")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Traces (contract.tracing): off unless set; the standard OpenTelemetry variable works too.
    otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        validation_alias=AliasChoices("DIFFUSION_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector base URL; traces go to <url>/v1/traces.",
    )


class ModelEntry(BaseModel):
    """One served model in the models file: where its weights are, and its own defaults and limits."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None  # None: the worker's default (the embedded model)
    # The API's defaults for the model until one of its workers has published its own (the native size
    # and defaults it reads off the loaded pipeline): what lets jobs queue for a model scaled to zero.
    width: int | None = Field(default=None, ge=8)
    height: int | None = Field(default=None, ge=8)
    default_steps: int | None = Field(default=None, ge=1)
    default_guidance_scale: float | None = Field(default=None, ge=0)
    default_scheduler: str | None = None
    max_steps: int | None = Field(default=None, ge=1)
    fixed_guidance_scale: float | None = Field(default=None, ge=0)
    controlnets: dict[str, str] | None = None
    lora_dir: Path | None = None


def read_models_file(path: Path | None) -> dict[str, ModelEntry]:
    """The models file (`{"name": {"source": ..., ...}}`), validated; stops start-up with a message if bad."""
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: ModelEntry.model_validate(entry) for name, entry in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        print(f"invalid configuration: {ENV_PREFIX}MODELS_FILE {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build settings from the environment, or stop the process with a message naming each bad variable."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"invalid configuration for {cls.__name__}:"]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {ENV_PREFIX}{field.upper()}: {err['msg']} (got {err.get('input')!r})")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
