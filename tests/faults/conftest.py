"""The fault-injection suite's cluster: a Redis of its own, the API, workers that can be killed and restarted,
and an audit that every accepted job ended exactly once."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis import Redis

from contract.records import JobStore
from tests.conftest import stack_env
from tests.helpers import RedisServer, Service, start_api, start_worker, wait_for, wait_ready

# Recovery bounds of these tests (the defaults are 10 s and 3 s: tests/faults/test_worker_faults.py
# measures a kill at the defaults once).
FAST = {"DIFFUSION_HEARTBEAT_TTL_SECONDS": "2", "DIFFUSION_MAINTENANCE_INTERVAL_SECONDS": "1"}


@dataclass
class Cluster:
    """One test's own service: Redis, the API and named workers on the tiny UNet model."""

    tmp: Path
    model: Path
    redis_server: RedisServer
    env: dict[str, str]
    api: Service | None = None
    workers: dict[str, Service] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """The key prefix of this cluster."""
        return self.env["DIFFUSION_KEY_PREFIX"]

    @property
    def redis(self) -> Redis:
        """A client of the cluster's Redis."""
        return Redis.from_url(self.redis_server.url, socket_timeout=5)

    @property
    def store(self) -> JobStore:
        """The job records."""
        return JobStore(self.redis, self.prefix, 3600)

    def start_api(self, **env: str) -> Service:
        """(Re)start the API process."""
        self.api = start_api({**self.env, **env}, self.tmp / f"api-{uuid.uuid4().hex[:4]}.log")
        return self.api

    def start_worker(self, name: str, wait: bool = True, **env: str) -> Service:
        """Start a worker process named `name` (its RQ worker id) and, by default, wait until it is warm."""
        full = {**self.env, "DIFFUSION_WORKER_ID": f"{self.prefix}-{name}", **env}
        worker = start_worker(self.model, full, self.tmp / f"{name}-{uuid.uuid4().hex[:4]}.log", name="tiny-sd")
        self.workers[name] = worker
        if wait:
            wait_ready(worker, self.redis, f"{self.prefix}.generate.tiny-sd", f"{self.prefix}-{name}")
        return worker

    def start_workers(self, *names: str, **env: str) -> None:
        """Start several workers at once (they load side by side) and wait until every one is warm."""
        for name in names:
            self.start_worker(name, wait=False, **env)
        for name in names:
            wait_ready(self.workers[name], self.redis, f"{self.prefix}.generate.tiny-sd", f"{self.prefix}-{name}")

    def client(self, timeout: float = 10) -> httpx.Client:
        """HTTP client of the API."""
        assert self.api is not None
        return httpx.Client(base_url=f"http://127.0.0.1:{self.api.port}", timeout=timeout)

    def worker_of(self, job_id: str) -> str | None:
        """Name of the worker whose attempt holds the job now."""
        record = self.store.get(job_id)
        return None if record is None or record.worker is None else record.worker.removeprefix(f"{self.prefix}-")

    def metric(self, name: str, worker: str) -> float:
        """A worker's counter summed over its labels (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.workers[worker].port}/metrics").text
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def stop(self) -> None:
        """Stop everything still running."""
        for service in [*self.workers.values(), *([self.api] if self.api else [])]:
            service.stop()


@contextmanager
def open_cluster(tiny_sd: Path, tmp: Path, **env: str) -> Iterator[Cluster]:
    """A Redis with the shipped production config (AOF every second) and the API (with `env` added to the
    settings of every process); tests add workers."""
    redis_server = RedisServer(tmp / "redis", shipped_config=True).start()
    settings = {"DIFFUSION_MAX_INFERENCE_STEPS": "5000", "DIFFUSION_REDIS_TIMEOUT_SECONDS": "2", **env}
    full = stack_env(redis_server.url, f"f{uuid.uuid4().hex[:8]}", tmp / "images", **settings)
    full["DIFFUSION_SERVED_MODELS"] = '["tiny-sd"]'
    cluster = Cluster(tmp, tiny_sd, redis_server, full)
    try:
        cluster.start_api()
        yield cluster
    finally:
        cluster.stop()
        redis_server.stop()


@pytest.fixture
def cluster(tiny_sd: Path, tmp_path: Path) -> Iterator[Cluster]:
    """One test's own cluster (Redis with the shipped config, the API; no worker yet)."""
    with open_cluster(tiny_sd, tmp_path) as cluster:
        yield cluster


def audit(cluster: Cluster, job_ids: list[str], attempts: int | None = None) -> None:
    """Every job ended exactly once: one terminal record and event, its images stored, none of an old attempt."""
    storage = Path(cluster.env["DIFFUSION_STORAGE_URL"])
    for job_id in job_ids:
        record = cluster.store.get(job_id)
        assert record is not None and record.status == "succeeded", (job_id, record)
        events = cluster.redis.xrange(cluster.store.events(job_id))
        states = [json.loads(fields[b"state"])["status"] for _, fields in events]  # type: ignore[union-attr]
        assert states.count("succeeded") == 1 and states[-1] == "succeeded", states
        assert len(record.images) == record.params.num_images
        final = {f"{image.key.split('/')[1]}" for image in record.images}
        assert all((storage / image.key).is_file() for image in record.images)
        assert all(k.endswith(f"-{record.attempts}.png") for k in final), "the images of the attempt that ended it"
        if attempts is not None:
            assert record.attempts == attempts, (job_id, record.attempts)


def stalled_at(worker: Service, point: str) -> None:
    """Wait until the worker sits in an armed failpoint."""
    wait_for(lambda: f"failpoint={point}" in worker.logs(), 60, f"the worker to reach failpoint {point}", interval=0.1)


def running_at(cluster: Cluster, job_id: str, stage: str, step: int = 0) -> str:
    """Wait until the job runs at `stage` (and at least `step`); returns the worker that holds it."""

    def there() -> str | None:
        record = cluster.store.get(job_id)
        ok = record and record.status == "running" and record.progress and record.progress.stage == stage
        return cluster.worker_of(job_id) if ok and record and record.progress.step >= step else None  # type: ignore[union-attr]

    found = wait_for(there, 60, f"the job to run at {stage}", interval=0.05)
    assert isinstance(found, str)
    return found
