"""`/v1/models`: the served models, what their workers published about them, and their load."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.deps import ServiceDep, SettingsDep
from app.errors import ServiceUnavailable, responses

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelView(BaseModel):
    """One served model; fields a worker publishes are null until a worker for it has started."""

    id: str
    ready_workers: int
    queue_depth: int
    pipeline: str | None = None
    width: int | None = None
    height: int | None = None
    default_steps: int | None = None
    default_guidance_scale: float | None = None
    scheduler: str | None = None
    schedulers: list[str] | None = None
    device: str | None = None
    dtype: str | None = None
    controlnets: list[str] | None = None
    max_steps: int | None = None
    fixed_guidance_scale: float | None = None
    loras: list[dict[str, str]] | None = Field(default=None, description="Adapters that fit: name and sha256.")
    max_loras: int | None = Field(
        default=None,
        description="Most adapters per request on this model's workers, "
        "where lower than the service's limit (compiled workers: their hot-swap slots).",
    )


class ModelList(BaseModel):
    """All served models, the default first."""

    object: str = "list"
    data: list[ModelView]


@router.get("", response_model=ModelList, responses=responses(ServiceUnavailable))
def list_models(service: ServiceDep, settings: SettingsDep) -> ModelList:
    """Served models with native size, defaults, valid schedulers, ready workers and queue depth."""
    # Published field -> view field, where the names differ.
    renamed = {"steps": "default_steps", "guidance_scale": "default_guidance_scale"}
    views = []
    for model in settings.models:
        info = {renamed.get(k, k): v for k, v in service.model_defaults(model).items()}
        known = {k: v for k, v in info.items() if k in ModelView.model_fields}
        views.append(
            ModelView(id=model, ready_workers=service.ready_workers(model), queue_depth=service.depth(model), **known)
        )
    return ModelList(data=views)
