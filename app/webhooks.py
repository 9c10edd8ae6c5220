"""Webhooks: signed per the Standard Webhooks spec, retried with backoff, sent off a dispatcher thread.

Every state change of a job that has a `webhook_url` lands (atomically with the change itself) in
one Redis stream; the dispatcher reads it through a consumer group (one delivery per change across
API replicas), filters by the job's `webhook_events`, throttles progress to one a second per job,
and hands deliveries to a small pool of sender threads, so a slow or dead receiver never slows
anything else. The denoising loop never sends anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from redis import Redis
from redis.exceptions import ResponseError

from app.metrics import ApiMetrics
from app.schemas import JobView
from app.settings import ApiSettings
from app.ssrf import WebhookRefused, check_url, pinned
from contract.jobs import JobRecord, JobStatus, Stage, WebhookEvent, now
from contract.keys import webhook_log_key, webhook_retry_key, webhook_stream_key, webhook_throttle_key
from contract.records import JobStore

log = logging.getLogger(__name__)

GROUP = "dispatchers"
MAX_RETRY_DELAY_SECONDS = 1800.0


def secret_bytes(secret: str) -> bytes:
    """Standard Webhooks secrets are `whsec_<base64>`; anything else is used as raw bytes."""
    return base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`."""
    digest = hmac.new(secret, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def event_of(state: dict[str, Any]) -> WebhookEvent | None:
    """Which webhook event a job state is: started (loading), progress, or completed (terminal)."""
    status = JobStatus(state["status"])
    if status.terminal:
        return WebhookEvent.COMPLETED
    if status == JobStatus.RUNNING and state.get("progress"):
        stage = Stage(state["progress"]["stage"])
        return WebhookEvent.STARTED if stage == Stage.LOADING else WebhookEvent.PROGRESS
    return None


class DeliveryLog:
    """Each job's webhook delivery attempts and their outcomes (a capped Redis list, kept past retention)."""

    MAX_ENTRIES = 100

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self.redis, self.prefix, self.ttl_seconds = redis, prefix, ttl_seconds

    def __call__(self, job_id: str) -> list[dict[str, Any]]:
        """The job's delivery attempts, oldest first."""
        raw: list[bytes] = self.redis.lrange(webhook_log_key(self.prefix, job_id), 0, -1)  # type: ignore[assignment]
        return [json.loads(entry) for entry in raw]

    def append(self, job_id: str, entry: dict[str, Any]) -> None:
        """Record one attempt."""
        key = webhook_log_key(self.prefix, job_id)
        with self.redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(entry))
            pipe.ltrim(key, -self.MAX_ENTRIES, -1)
            pipe.expire(key, self.ttl_seconds)
            pipe.execute()


Render = Callable[[JobRecord, dict[str, Any]], JobView]


class WebhookDispatcher:
    """Consumes job changes and delivers the subscribed ones; `render(record, state)` builds the body."""

    def __init__(
        self, store: JobStore, render: Render, log_: DeliveryLog, settings: ApiSettings, metrics: ApiMetrics
    ) -> None:
        self.store, self.render, self.log, self.settings, self.metrics = store, render, log_, settings, metrics
        self.redis = store.redis
        self.prefix = settings.key_prefix
        self.consumer = f"{socket.gethostname()}-{id(self)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._senders = ThreadPoolExecutor(max_workers=settings.webhook_senders, thread_name_prefix="webhook")
        self._http = httpx.Client(follow_redirects=False, timeout=settings.webhook_timeout_seconds)
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self._secret = secret_bytes(secret)

    def start(self) -> None:
        """Start the dispatcher thread (no-op when webhooks are not configured)."""
        if not self._secret:
            return
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading; deliveries in flight finish."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._senders.shutdown(wait=False)

    def _loop(self) -> None:
        stream = webhook_stream_key(self.prefix)
        while not self._stop.is_set():
            try:
                self._ensure_group(stream)
                self._send_due_retries()
                batch: list[Any] = self.redis.xreadgroup(  # type: ignore[assignment]
                    GROUP, self.consumer, {stream: ">"}, count=50, block=200
                )
                for _, entries in batch or []:
                    for entry_id, fields in entries:
                        self._handle(fields)
                        self.redis.xack(stream, GROUP, entry_id)
            except Exception:
                log.warning("webhook dispatcher error", exc_info=True)
                self._stop.wait(1)

    def _ensure_group(self, stream: str) -> None:
        try:
            self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _handle(self, fields: dict[bytes, bytes]) -> None:
        job_id = fields[b"job"].decode().rsplit(":", 1)[1]
        state = json.loads(fields[b"state"])
        event = event_of(state)
        record = self.store.get(job_id)
        if event is None or record is None or not record.webhook_url or event not in record.webhook_events:
            return
        if event == WebhookEvent.PROGRESS and not self.redis.set(
            webhook_throttle_key(self.prefix, job_id), "1", nx=True, px=1000
        ):
            return
        view = self.render(record, state)
        body = json.dumps(
            {"type": f"generation.{event.value}", "timestamp": now(), "data": json.loads(view.model_dump_json())}
        ).encode()
        delivery = {
            "id": f"msg_{job_id}_{fields[b'event'].decode()}",
            "job_id": job_id,
            "url": record.webhook_url,
            "event": event.value,
            "body": body.decode(),
            "first_at": now(),
            "attempt": 0,
        }
        self._senders.submit(self._attempt, delivery)

    def _send_due_retries(self) -> None:
        key = webhook_retry_key(self.prefix)
        due: list[bytes] = self.redis.zrangebyscore(key, "-inf", now(), start=0, num=20)  # type: ignore[assignment]
        for member in due:
            if self.redis.zrem(key, member):  # whoever removes it owns the retry
                self._senders.submit(self._attempt, json.loads(member))

    def _attempt(self, delivery: dict[str, Any]) -> None:
        delivery["attempt"] += 1
        outcome, detail, retry = self._post(delivery)
        entry = {
            "webhook_id": delivery["id"],
            "event": delivery["event"],
            "attempt": delivery["attempt"],
            "at": now(),
            "outcome": outcome,
            "detail": detail,
        }
        delay = min(MAX_RETRY_DELAY_SECONDS, self.settings.webhook_retry_base_seconds * 2 ** (delivery["attempt"] - 1))
        if retry and now() + delay - delivery["first_at"] <= self.settings.webhook_retry_window_seconds:
            entry["outcome"] = "retrying"
            self.redis.zadd(webhook_retry_key(self.prefix), {json.dumps(delivery): now() + delay})
        self.metrics.webhook_deliveries.labels(delivery["event"], entry["outcome"]).inc()
        self.log.append(delivery["job_id"], entry)

    def _post(self, delivery: dict[str, Any]) -> tuple[str, str, bool]:
        """(outcome, detail, retry?) of one attempt."""
        try:
            addresses = check_url(delivery["url"], self.settings.webhook_allowed_networks)  # DNS may have changed
        except WebhookRefused as exc:
            return "refused", str(exc), False
        target, host, extensions = pinned(delivery["url"], addresses[0])
        body = delivery["body"].encode()
        timestamp = int(time.time())
        headers = {
            **host,
            "content-type": "application/json",
            "webhook-id": delivery["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, delivery["id"], timestamp, body),
        }
        started = time.perf_counter()
        try:
            response = self._http.post(target, content=body, headers=headers, extensions=extensions)
        except httpx.TimeoutException:
            return "timeout", "no answer in time", True
        except httpx.TransportError as exc:
            return "error", type(exc).__name__, True
        finally:
            self.metrics.webhook_duration.observe(time.perf_counter() - started)
        code = response.status_code
        if 200 <= code < 300:
            return "delivered", str(code), False
        return "failed", str(code), code == 429 or code >= 500
