"""Runs a batch of jobs on the warm pipeline: start each attempt, denoise them together, hand them to the store.

Per job: its own record, progress (published off the critical path by `progress.ProgressPublisher`),
cancel, timeout, step metrics and reproducibility record. The batch stops early only when every job
in it has stopped; a job that stops while others go on ends at that step and its rows are discarded.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image
from redis.exceptions import RedisError

from contract.jobs import JobErrorType, JobPayload, Stage
from contract.logs import bind, prompt_digest
from contract.models import StepRates
from contract.records import JobStore
from contract.storage import Storage
from contract.tracing import Tracing
from worker import failures, metrics
from worker.batch import Batch, JobInput
from worker.encoding import encode_jpeg
from worker.jobrun import JobRun
from worker.pipeline import PreviewHook, WarmPipeline
from worker.previews import latent_preview
from worker.progress import ProgressPublisher
from worker.rqworker import BatchRunner
from worker.settings import WorkerSettings
from worker.storing import Done, Finished, Storer
from worker.tracing import BatchTrace, JobTrace

log = logging.getLogger(__name__)

RATE_WEIGHT = 0.3  # weight of the newest batch in the moving averages of step cost


class Runner(BatchRunner):
    """Owns the warm pipeline; runs one batch at a time while the previous one is being stored."""

    def __init__(
        self, warm: WarmPipeline, store: JobStore, storage: Storage, settings: WorkerSettings, on_done: Done
    ) -> None:
        self.warm, self.store, self.storage, self.settings = warm, store, storage, settings
        self.model = settings.name
        self.publisher = ProgressPublisher()
        self.storer = Storer(
            storage, self.model, settings.png_compress_level, settings.png_metadata, warm.fingerprint, on_done
        )
        self.on_done = on_done
        self.tracing = Tracing.open(settings.otlp_endpoint, "diffusion-worker")

    def run(self, payloads: Sequence[JobPayload]) -> None:
        """Run these compatible jobs as one batch; each job's end is reported through `on_done`.

        Raises `failures.DeviceLost` when the device is unusable: the process must exit.
        """
        runs = [JobRun(p, self.store, self.settings.worker_id, self.settings.job_timeout_seconds) for p in payloads]
        started = [run for run in runs if self._start(run)]
        if not started:
            return
        metrics.BATCH_JOBS.labels(self.model).observe(len(started))
        metrics.WORKER_BUSY.labels(self.model).set(1)
        try:
            finished = self._denoise(started)
        finally:
            metrics.WORKER_BUSY.labels(self.model).set(0)
            self._observe_memory()
        self.storer.submit(finished)

    def drain(self) -> None:
        """Wait until every batch handed to the store thread is stored (before the worker exits)."""
        self.storer.drain()

    def _start(self, run: JobRun) -> bool:
        with bind(job_id=run.job_id, model=self.model):
            if not run.start():
                self.on_done(run.job_id, {"skipped": True})
                return False
            run.trace = JobTrace(self.tracing, run.payload)
            params = run.payload.params
            wait = max(0.0, run.started_at - run.payload.created_at)
            metrics.QUEUE_WAIT_SECONDS.labels(self.model, run.payload.priority).observe(wait)
            log.info(
                "job started",
                extra={
                    "job_id": run.job_id,
                    "attempt": run.attempt,
                    "images": params.num_images,
                    "prompt_sha": prompt_digest(params.prompt),
                },
            )
            return True

    def _denoise(self, candidates: list[JobRun]) -> list[Finished]:
        """Denoise and decode; every run comes back with its pixels, or the reason it has none."""
        unreadable, runs, inputs = [], [], []
        trace = BatchTrace(self.tracing)
        for run in candidates:
            try:
                inputs.append(JobInput(run.payload.params, self._inputs(run)))
                runs.append(run)
            except Exception as exc:  # its input image is gone or the store is down: this job fails alone
                unreadable.append(Finished(run, error=failures.classify(exc)))
                trace.end([run], type(exc).__name__)
        if not runs:
            return unreadable
        batch = Batch(inputs)
        label = str(batch.size if self.settings.batch_images else 1)
        denoise = [0.0]

        def observe(seconds: float) -> None:
            denoise[0] += seconds
            trace.observed(seconds)
            metrics.STEP_SECONDS.labels(self.model, label).observe(seconds)

        self.warm.observe_step = observe
        for run in runs:
            self.publisher.watch(run)
        started = time.perf_counter()
        try:
            pixels = self.warm.generate(
                batch, lambda done, total: self._step(runs, done, total, trace), self._previewer(runs, batch)
            )
        except BaseException as exc:
            self._forget(runs)
            trace.end(runs, type(exc).__name__)
            if not isinstance(exc, Exception):  # a second SIGTERM: the jobs are re-run elsewhere, not lost
                for run in runs:
                    run.requeued()
                raise
            error = failures.classify(exc)  # raises DeviceLost when the process must go
            if error.type == JobErrorType.OUT_OF_MEMORY:
                self.warm.release_memory()
            if error.type == JobErrorType.INTERNAL_ERROR:
                log.error("batch crashed", exc_info=exc)
            return unreadable + [Finished(run, error=error) for run in runs]
        trace.end(runs)
        for run in runs:
            run.stage(Stage.STORING)
        self._forget(runs)
        metrics.INFERENCE_SECONDS.labels(self.model).observe(time.perf_counter() - started)
        self._measure(batch, denoise[0], time.perf_counter() - started)
        return unreadable + [self._finished(run, images, batch.size) for run, images in zip(runs, pixels, strict=True)]

    def _step(self, runs: list[JobRun], done: int, total: int, trace: BatchTrace) -> bool:
        trace.stepped()
        going = [run.step(done, total) for run in runs]
        self.publisher.nudge()
        return any(going)

    def _previewer(self, runs: list[JobRun], batch: Batch) -> PreviewHook | None:
        wanted = [(run, row) for run, row in zip(runs, batch.offsets(), strict=True) if run.payload.preview_every]
        if not wanted:
            return None

        def preview(done: int, latents: object) -> None:
            for run, row in wanted:
                if run.active and done % (run.payload.preview_every or 1) == 0:
                    picture = latent_preview(latents, row=row)
                    if picture is not None:
                        data = base64.b64encode(encode_jpeg(picture)).decode()
                        run.step(done, run.total_steps, preview=f"data:image/jpeg;base64,{data}")

        return preview

    def _forget(self, runs: list[JobRun]) -> None:
        self.publisher.flush()  # every progress event before the job's final one
        for run in runs:
            self.publisher.forget(run)

    def _finished(self, run: JobRun, images: list[np.ndarray], batch_size: int) -> Finished:
        if not run.active:
            return Finished(run)
        p = run.payload.params
        records = [
            self.warm.reproducibility(self.model, p.image_seed(k), list(p.loras), batch_size)
            for k in range(len(images))
        ]
        return Finished(run, pixels=images, reproducibility=records)

    def _measure(self, batch: Batch, denoise_seconds: float, total_seconds: float) -> None:
        """Fold this batch's costs into the model's moving averages, which the API turns into ETAs."""
        work = sum(job.params.megapixel_steps for job in batch.jobs)
        if work <= 0 or denoise_seconds <= 0:
            return
        sample = StepRates(
            step_seconds_per_mpx=denoise_seconds / work, overhead_seconds=max(0.0, total_seconds - denoise_seconds)
        )
        try:
            old = StepRates.read(self.store.redis, self.store.prefix, self.model)
            (old.updated(sample, RATE_WEIGHT) if old else sample).save(self.store.redis, self.store.prefix, self.model)
        except RedisError:  # only the ETA's measurement: never worth failing the batch
            log.warning("step cost not recorded: Redis unreachable")

    def _inputs(self, run: JobRun) -> dict[str, Image.Image]:
        """The job's input images, as the API stored them (already checked there)."""
        p, found = run.payload.params, {}
        for name, key in (("init", p.init_image), ("mask", p.mask_image), ("control", p.control_image)):
            if key is not None:
                with Image.open(io.BytesIO(self.storage.get(key))) as image:
                    found[name] = image.convert("L" if name == "mask" else "RGB")
        return found

    def _observe_memory(self) -> None:
        for kind, value in self.warm.memory().items():
            metrics.GPU_MEMORY_BYTES.labels(self.model, kind).set(value)
