"""FastAPI dependencies: the process-wide objects created in `create_app`, typed for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import ApiSettings
from app.generations import GenerationService
from app.metrics import ApiMetrics
from app.signing import UrlSigner
from contract.storage import LocalStorage


def _service(request: Request) -> GenerationService:
    return request.app.state.service  # type: ignore[no-any-return]


def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _signer(request: Request) -> UrlSigner:
    return request.app.state.signer  # type: ignore[no-any-return]


def _storage(request: Request) -> LocalStorage:
    return request.app.state.storage  # type: ignore[no-any-return]


def _metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


ServiceDep = Annotated[GenerationService, Depends(_service)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]
SignerDep = Annotated[UrlSigner, Depends(_signer)]
StorageDep = Annotated[LocalStorage, Depends(_storage)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]
