"""Redis killed, frozen or full: the API answers 503 with Retry-After and never hangs, nothing accepted is lost
or run twice, and the API and the workers carry on by themselves once Redis is back.

Promises (docs/reliability.md): with the shipped Redis config (AOF, fsync every second) a kill -9 of Redis
loses none of the jobs the API accepted; while Redis is down or frozen the API answers 503 with
`Retry-After` within its Redis timeout (`DIFFUSION_REDIS_TIMEOUT_SECONDS`) and `/healthz` still answers;
once Redis is back every accepted job ends exactly once; a full Redis (`maxmemory`, `noeviction`) refuses a
submission whole: 503, and no record without its queue entry or queue entry without its record.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import FAST, Cluster, audit, open_cluster, running_at
from tests.helpers import submit, wait_for

pytestmark = pytest.mark.slow

TIMEOUT = 1.0  # the API's DIFFUSION_REDIS_TIMEOUT_SECONDS in this module
BODY = {"prompt": "a red circle", "num_inference_steps": 2}


@pytest.fixture(scope="module")
def cluster(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module (each test leaves Redis up and healthy): the API and two workers."""
    tmp = tmp_path_factory.mktemp("redis-faults")
    with open_cluster(tiny_sd, tmp, DIFFUSION_REDIS_TIMEOUT_SECONDS=str(TIMEOUT), **FAST) as cluster:
        cluster.start_workers("a", "b")
        yield cluster


def unavailable(call: Callable[[], httpx.Response], bound: float) -> httpx.Response:
    """The answer of `call`: 503 `service_unavailable` with Retry-After, within `bound` seconds."""
    started = time.monotonic()
    response = call()
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "service_unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert elapsed < bound, f"answered after {elapsed:.2f} s"
    return response


def ended(http: httpx.Client, job_ids: list[str], timeout: float = 60) -> None:
    """Wait, through the API, until every job has ended."""
    for job_id in job_ids:
        wait_for(
            lambda job_id=job_id: http.get(f"/v1/generations/{job_id}").json()["status"] in ("succeeded", "failed"),
            timeout,
            f"job {job_id} to end",
            interval=0.1,
        )


def accepting(http: httpx.Client, timeout: float = 15) -> str:
    """Wait until the API accepts a job again; returns its id."""
    found = wait_for(
        lambda: (r := http.post("/v1/generations", json=BODY)).status_code == 202 and r.json()["id"],
        timeout,
        "the API to accept jobs again",
        interval=0.2,
    )
    return str(found)


def test_redis_killed_and_restarted_loses_no_accepted_job(cluster: Cluster) -> None:
    with cluster.client() as http:
        ids = [submit(http, seed=seed, num_inference_steps=8)["id"] for seed in range(20)]
        cluster.redis_server.signal(signal.SIGKILL)  # right after the last answer: within AOF's one-second fsync
        down = time.monotonic()
        unavailable(lambda: http.post("/v1/generations", json=BODY), 2 * TIMEOUT + 1)
        unavailable(lambda: http.get(f"/v1/generations/{ids[0]}"), 2 * TIMEOUT + 1)
        assert http.get("/healthz").status_code == 200
        time.sleep(max(0.0, 3 - (time.monotonic() - down)))  # 3 s down: longer than the workers' heartbeat TTL
        cluster.redis_server.start()
        assert all(cluster.store.get_many(ids)), "every accepted job is still there after the restart"
        ids.append(accepting(http))
        ended(http, ids)
    audit(cluster, ids)
    assert all(worker.proc.poll() is None for worker in cluster.workers.values()), "the workers rode it out"


def test_redis_frozen_gets_503_within_the_timeout_then_recovers(cluster: Cluster) -> None:
    with cluster.client(timeout=30) as http:
        job = submit(http, num_inference_steps=100)
        running_at(cluster, job["id"], "denoising", step=1)
        cluster.redis_server.signal(signal.SIGSTOP)
        try:
            # Side by side, so the API's client opens connections while Redis is frozen (their socket timeout
            # was once minutes: RQ had raised it on the client's pool).
            started = time.monotonic()
            with ThreadPoolExecutor(6) as pool:
                posts = [pool.submit(http.post, "/v1/generations", json=BODY) for _ in range(6)]
                for post in posts:
                    unavailable(post.result, 2 * TIMEOUT + 1 - (time.monotonic() - started))
            unavailable(lambda: http.get(f"/v1/generations/{job['id']}"), 2 * TIMEOUT + 1)
            unavailable(lambda: http.get("/v1/generations"), 2 * TIMEOUT + 1)
            started = time.monotonic()
            assert http.get("/healthz").status_code == 200 and time.monotonic() - started < 1
            time.sleep(max(0.0, 3 - (time.monotonic() - started)))
        finally:
            cluster.redis_server.signal(signal.SIGCONT)
        again = accepting(http)
        ended(http, [job["id"], again])
    audit(cluster, [job["id"], again])


def test_a_full_redis_refuses_submissions_whole_with_503(cluster: Cluster) -> None:
    redis, prefix = cluster.redis, cluster.prefix
    shipped = redis.config_get("maxmemory")["maxmemory"]
    before = set(redis.zrange(f"{prefix}:jobs", 0, -1))  # type: ignore[arg-type]
    accepted: list[str] = []
    refused = 0
    for worker in cluster.workers.values():  # the queue holds still while it is counted
        os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        redis.config_set("maxmemory", int(redis.info("memory")["used_memory"]) + 300_000)
        with cluster.client() as http:
            while refused < 5 and len(accepted) < 400:
                response = http.post("/v1/generations", json=BODY)
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                else:
                    unavailable(lambda response=response: response, 1)  # type: ignore[misc]
                    refused += 1
        redis.config_set("maxmemory", shipped)
        created = {m.decode() for m in set(redis.zrange(f"{prefix}:jobs", 0, -1)) - before}  # type: ignore[arg-type]
        queues = [f"rq:queue:{prefix}.generate.tiny-sd", f"rq:queue:{prefix}.generate.tiny-sd:intermediate"]
        queued = {m.decode() for key in queues for m in redis.lrange(key, 0, -1)}  # type: ignore[union-attr]
        rq_jobs = {job_id for job_id in created if redis.exists(f"rq:job:{job_id}")}
    finally:
        redis.config_set("maxmemory", shipped)
        for worker in cluster.workers.values():
            os.kill(worker.proc.pid, signal.SIGCONT)
    assert refused == 5 and accepted, "Redis filled up after some jobs"
    assert created == set(accepted), "a record for every accepted job, none for a refused one"
    assert rq_jobs == created, "RQ's job for every record"
    # Queued, but for the one job each stopped worker's blocking pop may have taken as it stopped.
    assert queued <= created and len(created - queued) <= len(cluster.workers), "nothing queued without its record"
    with cluster.client() as http:
        accepted.append(accepting(http))
        ended(http, accepted)
    audit(cluster, accepted, attempts=1)
