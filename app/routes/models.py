"""`/v1/models`: the served models, what their workers published about them, and their load."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, create_model

from app.deps import CallerDep, CatalogDep
from app.errors import ServiceUnavailable, Unauthorized, responses
from contract.models import ModelInfo

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelLoad(BaseModel):
    """A served model and its load; the fields its workers publish (ModelInfo) follow, null until one started."""

    id: str
    ready_workers: int
    queue_depth: int


def _optional(annotation: Any) -> Any:
    return annotation | None


if TYPE_CHECKING:
    ModelView = ModelLoad
else:
    # Every published field, optional: derived from ModelInfo so the two never drift apart.
    ModelView = create_model(
        "ModelView",
        __base__=ModelLoad,
        __doc__=ModelLoad.__doc__,
        **{
            name: (_optional(field.annotation), Field(default=None, description=field.description))
            for name, field in ModelInfo.model_fields.items()
        },
    )


class ModelList(BaseModel):
    """All served models, the default first."""

    object: str = "list"
    data: list[ModelView]


@router.get("", response_model=ModelList, responses=responses(Unauthorized, ServiceUnavailable))
def list_models(catalog: CatalogDep, caller: CallerDep) -> ModelList:
    """Served models with native size, defaults, valid schedulers, ready workers and queue depth."""
    views = []
    for model in catalog.names:
        info = catalog.info(model)
        published = info.model_dump() if info else {}
        views.append(
            ModelView(
                id=model, ready_workers=catalog.ready_workers(model), queue_depth=catalog.depth(model), **published
            )
        )
    return ModelList(data=views)
