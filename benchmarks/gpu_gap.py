"""The device's idle time between consecutive batches when jobs are queued back to back.

The loop is the worker runner's, minus Redis: `WarmPipeline.generate` on a batch, the pixels handed to a
store thread that PNG-encodes them with their text chunks and writes them to local storage (one batch
may wait, as in `worker.storing.Storer`), then straight on to the next batch. PyTorch's profiler
records every kernel, copy and memset on the device and a marker where each batch's `generate` call
begins; the gap before batch i is the time from the end of the last device activity before its marker
to the start of the first one after it. That is what the GPU waits for between jobs under a full
queue: the previous batch's numpy conversion, the hand-off, the next batch's pipeline and scheduler set
up, tokenization and CPU noise (with the store thread encoding at the same time). Not in it: the Redis
round trips of a real worker (record transitions, RQ's dequeue and claim; about 4 ms on loopback), and
the profiler's own cost of a few microseconds per operator. Steps per batch are chosen so denoising
outlasts PNG encoding, as with ordinary jobs: otherwise the gap would measure a store thread that
cannot keep up (`store_wait_ms` shows any time the main thread waited for it). On the CPU the
"device activity" is every operator the main thread runs.
"""

from __future__ import annotations

import queue
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from contract.jobs import GenerationParams
from contract.storage import LocalStorage, content_type_of, image_key
from worker.batch import Batch, JobInput
from worker.encoding import encode
from worker.pipeline import WarmPipeline

MARK = "gpu_check.batch"
JOB_IMAGES = (2, 1, 1, 4)  # a full batch of 8 images from four jobs, as the runner claims them


class StoreThread:
    """Encodes and writes finished batches off the main thread; at most one batch waits."""

    def __init__(self, root: Path, png_level: int) -> None:
        self.storage, self.png_level = LocalStorage(root), png_level
        self._queue: queue.Queue[list[tuple[str, np.ndarray]]] = queue.Queue(maxsize=1)
        threading.Thread(target=self._loop, name="store", daemon=True).start()

    def submit(self, images: list[tuple[str, np.ndarray]]) -> None:
        """Hand a batch's (key, pixels) over; blocks while another batch still waits."""
        self._queue.put(images)

    def drain(self) -> None:
        """Wait until every batch handed over is written."""
        self._queue.join()

    def _loop(self) -> None:
        while True:
            images = self._queue.get()
            for key, array in images:
                text = {"prompt": "gap check", "seed": key, "model": "gpu-check"}
                self.storage.put(key, encode(array, "png", 90, self.png_level, text), content_type_of(key))
            self._queue.task_done()


def full_batches(side: int, steps: int, count: int) -> list[Batch]:
    """`count` batches of 8 images, each from several jobs that share a batch key."""
    batches = []
    for b in range(count):
        jobs = [
            JobInput(
                GenerationParams(
                    prompt=f"job {j} of batch {b}: a red circle on a blue background",
                    width=side,
                    height=side,
                    num_inference_steps=steps,
                    guidance_scale=7.5,
                    seed=100 * b + 10 * j,
                    num_images=n,
                )
            )
            for j, n in enumerate(JOB_IMAGES)
        ]
        batches.append(Batch(jobs))
    return batches


def measure_idle_gaps(warm: WarmPipeline, side: int, steps: int, count: int) -> dict[str, Any]:
    """Run `count` full batches back to back under the profiler; the idle gaps between them, in ms."""
    cuda = warm.runtime.device.type == "cuda"
    batches = full_batches(side, steps, count)
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    waits: list[float] = []  # ms the main thread was blocked handing a batch to the store thread
    with tempfile.TemporaryDirectory() as root:
        store = StoreThread(Path(root), warm.settings.png_compress_level)
        with profile(activities=activities) as prof:
            for i, batch in enumerate(batches):
                with record_function(f"{MARK}{i}"):
                    pixels = warm.generate(batch, lambda done, total: True)
                job_ids = [uuid.uuid4().hex for _ in batch.jobs]
                began = time.perf_counter()
                store.submit(
                    [
                        (image_key(job_id, k, "png", 1), array)
                        for job_id, images in zip(job_ids, pixels, strict=True)
                        for k, array in enumerate(images)
                    ]
                )
                waits.append((time.perf_counter() - began) * 1e3)
            store.drain()
    work, marks = activity(prof.profiler.kineto_results.events(), cuda)
    gaps = [ns / 1e6 for ns in idle_gaps(work, marks)]
    if not gaps:
        raise RuntimeError("the profiler recorded no device activity around the batch markers")
    return {
        "gaps_ms": [round(g, 3) for g in gaps],
        "median_ms": round(statistics.median(gaps), 3),
        "max_ms": round(max(gaps), 3),
        "busy_fraction": round(busy_fraction(work, marks[0], _end_of(work)), 4),
        "store_wait_ms": [round(w, 3) for w in waits],
        "batches": count,
        "images_per_batch": sum(JOB_IMAGES),
        "steps": steps,
        "activity": "CUDA kernels, copies and memsets" if cuda else "CPU operators of the main thread",
    }


def activity(events: Sequence[Any], cuda: bool) -> tuple[list[tuple[int, int]], list[int]]:
    """Device work intervals (ns) and the start of each batch marker, from the profiler's raw events."""
    work, marks = [], {}
    for event in events:
        name = event.name()
        if name.startswith(MARK):
            if event.device_type() == DeviceType.CPU:
                marks[int(name.removeprefix(MARK))] = event.start_ns()
            continue
        if event.is_user_annotation():
            continue
        on_device = event.device_type() == DeviceType.CUDA
        if on_device if cuda else event.activity_type() == "cpu_op":
            work.append((event.start_ns(), event.end_ns()))
    return sorted(work), [marks[i] for i in sorted(marks)]


def idle_gaps(work: Sequence[tuple[int, int]], marks: Sequence[int]) -> list[int]:
    """For each marker after the first: first work starting at or after it minus the latest end of work
    that started before it (0 when work runs across the marker)."""
    gaps = []
    for mark in marks[1:]:
        before = [end for start, end in work if start < mark]
        after = [start for start, _ in work if start >= mark]
        if before and after:
            gaps.append(max(0, min(after) - max(before)))
    return gaps


def busy_fraction(work: Sequence[tuple[int, int]], begin: int, end: int) -> float:
    """Share of [begin, end] during which some device work ran (intervals merged)."""
    busy, cursor = 0, begin
    for start, stop in sorted(work):
        start, stop = max(start, cursor), min(stop, end)
        if stop > start:
            busy += stop - start
            cursor = stop
    return busy / (end - begin) if end > begin else 0.0


def _end_of(work: Sequence[tuple[int, int]]) -> int:
    return max(end for _, end in work)
