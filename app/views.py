"""The job object clients see: a record rendered with signed image URLs, queue position, ETA and webhook log.

`JobRenderer` is built once per app; routes get it per request through `app.deps.RendererDep`
(bound to that request's base URL), webhooks and SSE through the same class. Rendering only reads.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from app.eta import Estimator
from app.queue import JobQueue
from app.schemas import (
    ErrorView,
    ImageView,
    JobView,
    ProgressView,
    WebhookDelivery,
    WebhookView,
    maybe_timestamp,
    timestamp,
)
from app.signing import UrlSigner
from app.webhooks import DeliveryLog
from contract.jobs import JobRecord, JobStatus, Progress, Stage
from contract.storage import Storage

INPUT_FIELDS = ("init_image", "mask_image", "control_image")


class JobRenderer:
    """Turns records into job objects; `base_url` prefixes the image URLs the API serves itself."""

    def __init__(
        self,
        queue: JobQueue,
        estimate: Estimator,
        signer: UrlSigner,
        storage: Storage,
        deliveries: DeliveryLog,
        retention_seconds: int,
        base_url: str,
        presigned: bool = False,
    ) -> None:
        self.queue, self.estimate, self.signer, self.storage = queue, estimate, signer, storage
        self.deliveries, self.retention_seconds = deliveries, retention_seconds
        self.base_url = base_url.rstrip("/")
        self.presigned = presigned  # DIFFUSION_IMAGE_DELIVERY=presigned: the store's own URL in the job object

    def for_base_url(self, base_url: str) -> JobRenderer:
        """The same renderer with image URLs under another base (the request's own, behind no proxy)."""
        return JobRenderer(
            self.queue,
            self.estimate,
            self.signer,
            self.storage,
            self.deliveries,
            self.retention_seconds,
            base_url,
            self.presigned,
        )

    def __call__(self, record: JobRecord) -> JobView:
        """The job object of a record."""
        position = (
            self.queue.position(record.id, record.model, record.priority) if record.status == JobStatus.QUEUED else None
        )
        estimate = self.estimate(record, position)
        progress = record.progress or Progress.at(Stage.QUEUED, 0, record.params.num_inference_steps)
        inputs = {name: "provided" for name in INPUT_FIELDS if getattr(record.params, name)}
        return JobView(
            id=record.id,
            status=record.status,
            model=record.model,
            created_at=timestamp(record.created_at),
            started_at=maybe_timestamp(record.started_at),
            finished_at=maybe_timestamp(record.finished_at),
            priority=record.priority,
            queue_position=position,
            estimated_start_at=maybe_timestamp(estimate[0] if estimate else None),
            estimated_finish_at=maybe_timestamp(estimate[1] if estimate else None),
            deadline_at=maybe_timestamp(record.start_by),
            progress=ProgressView(**progress.model_dump()),
            params=record.params.model_copy(update=inputs),
            images=self._images(record),
            error=ErrorView(**record.error.model_dump()) if record.error else None,
            cancel_reason=record.cancel_reason,
            webhook=self._webhook(record),
            preview=record.preview if record.status == JobStatus.RUNNING else None,
        )

    def at_state(self, record: JobRecord, state: dict[str, Any]) -> JobView:
        """The job object as of one event: the record, with that event's status and progress."""
        known = {k: v for k, v in state.items() if k in JobRecord.model_fields and v is not None}
        # A preview belongs to the one event that brought it, not to every later one.
        return self(record.model_validate({**record.model_dump(), **known, "preview": state.get("preview")}))

    def _webhook(self, record: JobRecord) -> WebhookView | None:
        if not record.webhook_url:
            return None
        deliveries = [WebhookDelivery(**{**d, "at": timestamp(d["at"])}) for d in self.deliveries(record.id)]
        return WebhookView(url=record.webhook_url, events=record.webhook_events, deliveries=deliveries)

    def image_url(self, key: str, not_after: float) -> tuple[str, int]:
        """A URL of an output image and when it expires: the API's signed one, or the store's presigned one."""
        expires, signature = self.signer.sign(key, not_after)
        direct = self.storage.url(key, expires) if self.presigned else None
        if direct is not None:
            return direct, expires
        return f"{self.base_url}/v1/images/{key}?{urlencode({'expires': expires, 'sig': signature})}", expires

    def _images(self, record: JobRecord) -> list[ImageView]:
        if record.status != JobStatus.SUCCEEDED:
            return []
        # Never sign past the image's own deletion at the end of retention.
        not_after = (record.finished_at or record.created_at) + self.retention_seconds
        images = []
        for image in record.images:
            url, expires = self.image_url(image.key, not_after)
            images.append(
                ImageView(
                    url=url,
                    url_expires_at=timestamp(expires),
                    width=image.width,
                    height=image.height,
                    seed=image.seed,
                    content_type=image.content_type,
                    reproducibility=image.reproducibility,
                )
            )
        return images
