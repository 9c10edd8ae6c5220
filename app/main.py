"""Application factory: settings, Redis, storage, queue, services, views and metrics wired into one FastAPI app."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import start_http_server
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import errors
from app.accesslog import AccessLog
from app.auth import KeyStore, is_loopback
from app.catalog import Catalog
from app.deps import Services
from app.eta import Estimator
from app.housekeeping import Housekeeping
from app.jobs import JobService
from app.metrics import ApiMetrics, QueueCollector
from app.middleware import BodyLimit, RequestContext
from app.queue import JobQueue
from app.quotas import Quotas
from app.resolution import Resolver
from app.routes import events, generations, health, images, models, openai_images, playground
from app.settings import ApiSettings
from app.signing import UrlSigner
from app.streams import EventHub, LongPolls, SharedRenders
from app.views import JobRenderer
from app.webhooks import DeliveryLog, WebhookDispatcher
from contract import logs
from contract.settings import load_settings
from contract.storage import open_storage

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def _signing_secret(settings: ApiSettings) -> bytes:
    if settings.url_signing_secret is None:
        log.warning(
            "DIFFUSION_URL_SIGNING_SECRET is not set: image URLs are signed with a random per-process "
            "secret and stop working when the API restarts or on another API replica"
        )
        return secrets.token_bytes(32)
    return settings.url_signing_secret.get_secret_value().encode()


def build_services(settings: ApiSettings) -> Services:
    """Every process-wide object of the API, wired together."""
    # One immediate retry (a pooled connection that died with a Redis restart), not redis-py 8's default of
    # three with jittered exponential backoff: that stretched one command past 2x the timeout and a request
    # of several commands to tens of seconds while Redis was frozen, instead of a prompt 503. No idle health
    # check either: the retry covers a dead pooled connection, and the check's PING (retried too) doubled
    # the time a new connection takes to fail on a frozen Redis.
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 1),
    )
    storage = open_storage(settings.storage_url, settings.storage_timeout_seconds, settings.storage_retries)
    queue = JobQueue(
        redis, settings.key_prefix, settings.job_timeout_seconds, settings.job_retries, settings.job_retention_seconds
    )
    catalog = Catalog(redis, settings, queue)
    quotas = Quotas(redis, settings.key_prefix, settings.queue_full_retry_after_seconds)
    jobs = JobService(redis, settings, storage, queue, Resolver(settings, catalog), quotas)
    previous = tuple(s.get_secret_value().encode() for s in settings.url_signing_previous_secrets)
    signer = UrlSigner(_signing_secret(settings), settings.image_url_ttl_seconds, previous)
    deliveries = DeliveryLog(
        redis, settings.key_prefix, settings.job_retention_seconds + settings.webhook_retry_window_seconds
    )
    base_url = settings.public_base_url or f"http://{settings.host}:{settings.port}"
    renderer = JobRenderer(
        queue,
        Estimator(queue, catalog, jobs.store),
        signer,
        storage,
        deliveries,
        settings.job_retention_seconds,
        base_url,
        presigned=settings.image_delivery == "presigned",
    )
    # Every event stream of this process is read through one hub (one Redis connection for them all).
    hub = EventHub(settings.redis_url, settings.key_prefix, settings.max_event_streams, settings.redis_timeout_seconds)
    keys = KeyStore(redis, settings.key_prefix)
    return Services(
        settings,
        jobs,
        catalog,
        renderer,
        signer,
        storage,
        ApiMetrics(),
        hub,
        LongPolls(settings.max_long_polls),
        SharedRenders(),
        keys,
    )


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the API; `settings` defaults to the environment."""
    settings = settings or load_settings(ApiSettings)
    logs.configure(settings.log_format, settings.log_level)
    services = build_services(settings)
    housekeeping = Housekeeping(services.jobs, settings.models, settings.sweep_interval_seconds, services.metrics)
    dispatcher = WebhookDispatcher(
        services.jobs.store, services.renderer.at_state, services.renderer.deliveries, settings, services.metrics
    )

    if settings.auth == "off" and not is_loopback(settings.host):
        log.warning("DIFFUSION_AUTH=off on %s: anyone who reaches the port can use and read every job", settings.host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        housekeeping.start()
        dispatcher.start()
        await services.hub.start()
        # Operators' scrape port: /metrics without a key, on an address they keep private.
        scrape = (
            start_http_server(settings.metrics_port, registry=services.metrics.registry)
            if settings.metrics_port
            else None
        )
        try:
            yield
        finally:
            if scrape is not None:
                scrape[0].shutdown()
            dispatcher.stop()
            housekeeping.stop()
            await services.hub.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="Diffusion image service",
        version=VERSION,
        description="Queue text-to-image generations, poll their status, download the images by signed URL.",
    )
    services.metrics.watch_queues(QueueCollector(services.catalog))
    app.state.services = services
    errors.install(app)
    routers = (generations, events, images, models, openai_images, health, playground)
    for module in routers:
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, metrics=services.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["Location", "Retry-After", "X-Request-ID", "Idempotent-Replayed"],
        )
    app.add_middleware(AccessLog)  # inside RequestContext: its lines carry the request id
    app.add_middleware(RequestContext, metrics=services.metrics)
    return app
