"""The API killed (kill -9) in the middle of a submission: the job is either absent or whole, never half-written.

Promise (docs/reliability.md): a submission writes the job's record, first event, index entries and queue
entry in one Redis transaction, so an API process killed at any point of it leaves nothing of the job
(killed before the transaction) or all of it (killed after, before answering); a job left whole runs
exactly once, and a restarted API serves it. A client that got no answer cannot tell which: it retries
with the same Idempotency-Key (the README's client section), which the transaction covers too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import FAST, Cluster, audit, open_cluster
from tests.helpers import submit, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The API (restarted by each test) and one worker."""
    with open_cluster(tiny_sd, tmp_path_factory.mktemp("api-faults"), **FAST) as cluster:
        cluster.start_worker("a")
        yield cluster


def jobs(cluster: Cluster) -> set[str]:
    """Ids of every job with a record (the index every record is written with)."""
    return {m.decode() for m in cluster.redis.zrange(f"{cluster.prefix}:jobs", 0, -1)}  # type: ignore[union-attr]


def rq_jobs(cluster: Cluster) -> set[str]:
    """Ids of every job RQ holds (queued, running or finished)."""
    return {key.decode().removeprefix("rq:job:") for key in cluster.redis.scan_iter("rq:job:*")}


def kill_at(cluster: Cluster, point: str) -> None:
    """Restart the API with `point` armed, submit, and kill -9 the API while the submission stalls there."""
    assert cluster.api is not None
    cluster.api.stop()
    api = cluster.start_api(DIFFUSION_FAILPOINTS=f"{point}=60")
    answers: list[object] = []

    def post() -> None:
        try:
            with cluster.client(timeout=90) as http:
                answers.append(http.post("/v1/generations", json={"prompt": "p", "num_inference_steps": 2}))
        except httpx.HTTPError as exc:
            answers.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    wait_for(lambda: f"failpoint={point}" in api.logs(), 30, f"the API to stall at {point}", interval=0.05)
    api.kill()
    thread.join(30)
    assert len(answers) == 1 and isinstance(answers[0], httpx.HTTPError), "the client got no answer"
    cluster.start_api()


def test_killed_before_enqueue_leaves_nothing_of_the_job(cluster: Cluster) -> None:
    known, known_rq = jobs(cluster), rq_jobs(cluster)
    kill_at(cluster, "before_enqueue")
    assert jobs(cluster) == known, "no record"
    assert rq_jobs(cluster) == known_rq, "nothing queued"
    with cluster.client() as http:
        job = submit(http)  # the restarted API works
        wait_for(lambda: http.get(f"/v1/generations/{job['id']}").json()["status"] == "succeeded", 60, "the job")
    audit(cluster, [job["id"]], attempts=1)


def test_killed_after_enqueue_leaves_the_whole_job_and_it_runs_once(cluster: Cluster) -> None:
    known = jobs(cluster)
    kill_at(cluster, "after_enqueue")
    (job_id,) = jobs(cluster) - known
    with cluster.client() as http:
        wait_for(lambda: http.get(f"/v1/generations/{job_id}").json()["status"] == "succeeded", 60, "the job")
    audit(cluster, [job_id], attempts=1)
