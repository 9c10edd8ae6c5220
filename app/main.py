"""Application factory: settings, Redis, storage, signer and metrics wired into one FastAPI app."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from app import errors
from app.config import ApiSettings
from app.generations import GenerationService
from app.metrics import ApiMetrics, QueueCollector
from app.middleware import BodyLimit, RequestContext
from app.routes import generations, health, images, models, openai_images, playground
from app.routes.generations import Renderer
from app.signing import UrlSigner
from app.sweeper import Sweeper
from app.webhooks import WebhookDispatcher
from contract import logs
from contract.settings import load_settings
from contract.storage import LocalStorage

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the API; `settings` defaults to the environment."""
    settings = settings or load_settings(ApiSettings)
    logs.configure(settings.log_format, settings.log_level)
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )
    if settings.url_signing_secret is None:
        log.warning(
            "DIFFUSION_URL_SIGNING_SECRET is not set: image URLs are signed with a random per-process "
            "secret and stop working when the API restarts or on another API replica"
        )
        secret = secrets.token_bytes(32)
    else:
        secret = settings.url_signing_secret.get_secret_value().encode()

    storage = LocalStorage(settings.storage_dir)
    service = GenerationService(redis, settings, storage)
    sweeper = Sweeper(service, settings.sweep_interval_seconds)
    metrics = ApiMetrics()
    signer = UrlSigner(secret, settings.image_url_ttl_seconds)
    base_url = settings.public_base_url or f"http://{settings.host}:{settings.port}"
    dispatcher = WebhookDispatcher(service, Renderer(service, signer, base_url).at_state, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper.start()
        dispatcher.start()
        try:
            yield
        finally:
            dispatcher.stop()
            sweeper.stop()
            await app.state.async_redis.aclose()

    app = FastAPI(
        lifespan=lifespan,
        title="Diffusion image service",
        version=VERSION,
        description="Queue text-to-image generations, poll their status, download the images by signed URL.",
    )
    metrics.watch_queues(QueueCollector(settings.models, service.depth, service.ready_workers))
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    app.state.signer = signer
    app.state.storage = storage
    # SSE streams block on XREAD: they get their own async connections, without a read timeout.
    app.state.async_redis = AsyncRedis.from_url(
        settings.redis_url, socket_connect_timeout=settings.redis_timeout_seconds
    )

    errors.install(app)
    app.include_router(generations.router)
    app.include_router(images.router)
    app.include_router(models.router)
    app.include_router(openai_images.router)
    app.include_router(health.router)
    app.include_router(playground.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(RequestContext, metrics=metrics)
    return app
