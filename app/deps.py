"""FastAPI dependencies: the process-wide objects `create_app` builds, typed for the routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import ANONYMOUS, Caller, KeyStore, caller_of
from app.catalog import Catalog
from app.errors import NotFound, Unauthorized
from app.jobs import JobService
from app.metrics import ApiMetrics
from app.settings import ApiSettings
from app.signing import UrlSigner
from app.streams import EventHub, LongPolls, SharedRenders
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
    hub: EventHub
    long_polls: LongPolls
    renders: SharedRenders
    keys: KeyStore


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


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer dsk_...`.")


def _caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    """Who calls: the API key's caller when auth is on (401 without a valid key), else the anonymous admin.
    The key's name goes to `request.state.key_name` for the access log (never the key)."""
    services = _services(request)
    settings = services.settings
    if not settings.auth_required:
        caller = ANONYMOUS
    else:
        if credentials is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        record = services.keys.lookup(credentials.credentials)
        if record is None:
            raise Unauthorized("the API key is unknown or was revoked")
        caller = caller_of(record, settings.default_requests_per_minute, settings.default_max_active_jobs)
    request.state.key_name = caller.name
    return caller


def _admin(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    """An admin caller (operators' routes such as /metrics); others are told the route does not exist."""
    if not caller.admin:
        raise NotFound("no such route")
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]
AdminDep = Annotated[Caller, Depends(_admin)]
