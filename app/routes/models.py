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
    max_steps: int | None = None
    fixed_guidance_scale: float | None = None
    loras: list[dict[str, str]] | None = Field(default=None, description="Adapters that fit: name and sha256.")


class ModelList(BaseModel):
    """All served models, the default first."""

    object: str = "list"
    data: list[ModelView]


@router.get("", response_model=ModelList, responses=responses(ServiceUnavailable))
def list_models(service: ServiceDep, settings: SettingsDep) -> ModelList:
    """Served models with native size, defaults, valid schedulers, ready workers and queue depth."""
    views = []
    for model in settings.models:
        info = service.model_defaults(model)
        views.append(ModelView(
            id=model, ready_workers=service.ready_workers(model), queue_depth=service.depth(model),
            pipeline=info.get("pipeline"), width=info.get("width"), height=info.get("height"),
            default_steps=info.get("steps"), default_guidance_scale=info.get("guidance_scale"),
            scheduler=info.get("scheduler"), schedulers=info.get("schedulers"), device=info.get("device"),
            dtype=info.get("dtype"), loras=info.get("loras"), max_steps=info.get("max_steps"),
            fixed_guidance_scale=info.get("fixed_guidance_scale")))
    return ModelList(data=views)
