"""FastAPI dependencies: the process-wide objects `create_app` builds, typed for the routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis

from app.catalog import Catalog
from app.jobs import JobService
from app.metrics import ApiMetrics
from app.settings import ApiSettings
from app.signing import UrlSigner
from app.views import JobRenderer
from contract.storage import Storage


@dataclass(frozen=True)
class Services:
    """Everything routes use, built once per app (`app.state.services`)."""

    settings: ApiSettings
    jobs: JobService
    catalog: Catalog
    renderer: JobRenderer
    signer: UrlSigner
    storage: Storage
    metrics: ApiMetrics
    async_redis: AsyncRedis


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _jobs(request: Request) -> JobService:
    return _services(request).jobs


def _settings(request: Request) -> ApiSettings:
    return _services(request).settings


def _catalog(request: Request) -> Catalog:
    return _services(request).catalog


def _signer(request: Request) -> UrlSigner:
    return _services(request).signer


def _storage(request: Request) -> Storage:
    return _services(request).storage


def _metrics(request: Request) -> ApiMetrics:
    return _services(request).metrics


def _renderer(request: Request) -> JobRenderer:
    """The job renderer, with image URLs under the configured public base URL or this request's own."""
    services = _services(request)
    return services.renderer.for_base_url(services.settings.public_base_url or str(request.base_url))


JobsDep = Annotated[JobService, Depends(_jobs)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
SignerDep = Annotated[UrlSigner, Depends(_signer)]
StorageDep = Annotated[Storage, Depends(_storage)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]
RendererDep = Annotated[JobRenderer, Depends(_renderer)]
ServicesDep = Annotated[Services, Depends(_services)]
