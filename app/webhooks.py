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
import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.exceptions import ResponseError

from app.config import ApiSettings
from app.metrics import ApiMetrics
from contract.jobs import JobStatus, Stage, WebhookEvent, now
from contract.queues import webhook_log_key, webhook_retry_key, webhook_stream_key

log = logging.getLogger(__name__)

GROUP = "dispatchers"
MAX_RETRY_DELAY_SECONDS = 1800.0


class WebhookRefused(ValueError):
    """A webhook URL that may not be called (scheme, unresolvable, or a non-public address)."""


def check_url(url: str, allowed_networks: list[str]) -> None:
    """Refuse non-http(s) URLs and hosts that resolve to loopback, private, link-local or metadata addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url must be an http or https URL with a host")
    if parts.username or parts.password:
        raise WebhookRefused("webhook_url must not carry credentials")
    try:
        infos = socket.getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"webhook_url host {parts.hostname!r} does not resolve") from None
    allowed = [ipaddress.ip_network(n) for n in allowed_networks]
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if any(address in network for network in allowed):
            continue
        if not address.is_global or address.is_multicast:
            raise WebhookRefused(f"webhook_url resolves to a non-public address ({address}); refused")


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


class WebhookDispatcher:
    """Consumes job changes and delivers the subscribed ones; `render(job_id, state)` builds the body."""

    def __init__(self, service: Any, render: Any, settings: ApiSettings, metrics: ApiMetrics) -> None:
        self.service, self.render, self.settings, self.metrics = service, render, settings, metrics
        self.redis = service.redis
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
                batch = self.redis.xreadgroup(GROUP, self.consumer, {stream: ">"}, count=50, block=200)
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
        record = self.service.store.get(job_id)
        if event is None or record is None or not record.webhook_url or event not in record.webhook_events:
            return
        if event == WebhookEvent.PROGRESS and not self.redis.set(
            f"{self.prefix}:webhook-throttle:{job_id}", "1", nx=True, px=1000
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
        for member in self.redis.zrangebyscore(key, "-inf", now(), start=0, num=20):
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
        key = webhook_log_key(self.prefix, delivery["job_id"])
        with self.redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(entry))
            pipe.ltrim(key, -100, -1)
            pipe.expire(key, self.settings.job_retention_seconds + self.settings.webhook_retry_window_seconds)
            pipe.execute()

    def _post(self, delivery: dict[str, Any]) -> tuple[str, str, bool]:
        """(outcome, detail, retry?) of one attempt."""
        try:
            check_url(delivery["url"], self.settings.webhook_allowed_networks)  # again: DNS may have changed
        except WebhookRefused as exc:
            return "refused", str(exc), False
        body = delivery["body"].encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, delivery["id"], timestamp, body),
        }
        started = time.perf_counter()
        try:
            response = self._http.post(delivery["url"], content=body, headers=headers)
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
