"""Liveness, readiness and metrics endpoints for orchestrators and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from redis.exceptions import RedisError

from app.deps import AdminDep, CatalogDep, MetricsDep, SettingsDep
from app.errors import Unauthorized, responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Liveness answer."""

    status: str


class Readiness(BaseModel):
    """Readiness answer: what is missing when not ready."""

    status: str
    redis: bool
    default_model: str
    ready_workers: int
    reason: str | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no dependency is checked). Answered on the event loop: a liveness probe must not
    queue for the threadpool behind a burst of renders or a frozen Redis."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready."}})
def readyz(catalog: CatalogDep, settings: SettingsDep) -> Response:
    """Ready when Redis answers and at least one warm worker serves the default model."""
    model = settings.default_model
    try:
        catalog.redis.ping()
        workers = catalog.ready_workers(model)
    except RedisError as exc:
        body = Readiness(
            status="unavailable",
            redis=False,
            default_model=model,
            ready_workers=0,
            reason=f"redis unreachable: {type(exc).__name__}",
        )
        return JSONResponse(body.model_dump(), status_code=503)
    if workers == 0:
        body = Readiness(
            status="unavailable",
            redis=True,
            default_model=model,
            ready_workers=0,
            reason=f"no warm worker serves model {model!r}",
        )
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ok", redis=True, default_model=model, ready_workers=workers).model_dump())


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **responses(Unauthorized)},
)
def metrics(metrics: MetricsDep, caller: AdminDep) -> Response:
    """Prometheus text exposition of the API's metrics (an admin key when auth is on; or scrape
    `DIFFUSION_METRICS_PORT`, which needs none)."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
