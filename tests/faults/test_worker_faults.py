"""Workers that die, stall or are told to stop: every accepted job ends exactly once, within the recovery bound.

Promises (docs/reliability.md): a job whose worker is killed at any point (denoising, decoding,
storing) runs again on another worker, once, and its record shows it queued meanwhile; at default
settings it runs again within 15 s of the kill; a healthy job that pauses outside the step loop for
longer than the heartbeat TTL is never taken for dead; SIGTERM lets the running job finish, a second
SIGTERM hands it back to be re-run; a worker killed mid-batch leaves every job of the batch to run again,
each once.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.faults.conftest import FAST, Cluster, audit, running_at, stalled_at
from tests.helpers import submit, wait_for

pytestmark = pytest.mark.slow

LONG = 3000  # steps: a job that runs for a while on the tiny model


def finished(cluster: Cluster, job_id: str, timeout: float = 120) -> None:
    with cluster.client() as http:
        wait_for(
            lambda: http.get(f"/v1/generations/{job_id}").json()["status"] in ("succeeded", "failed"),
            timeout,
            "the job to end",
            interval=0.2,
        )


def test_killed_mid_denoise_runs_again_within_15_s_at_default_settings(cluster: Cluster) -> None:
    for name in ("a", "b"):
        cluster.start_worker(name)  # default heartbeat TTL (10 s) and maintenance interval (3 s)
    with cluster.client() as http:
        job = submit(http, num_inference_steps=LONG)
        first = running_at(cluster, job["id"], "denoising", step=3)
        cluster.workers[first].kill()
        killed = time.monotonic()
        second = wait_for(lambda: (w := cluster.worker_of(job["id"])) != first and w, 20, "another worker's attempt")
        recovery = time.monotonic() - killed
        http.post(f"/v1/generations/{job['id']}/cancel")
    statuses = [json.loads(f[b"state"])["status"] for _, f in cluster.redis.xrange(cluster.store.events(job["id"]))]
    assert "queued" in statuses[statuses.index("running") :], "the record showed it queued again while it waited"
    assert second != first and recovery < 15, f"running again after {recovery:.1f} s"
    record = cluster.store.get(job["id"])
    assert record and record.attempts == 2


@pytest.mark.parametrize("point", ["decode", "store"])
def test_killed_mid_decode_or_mid_store_ends_once_on_the_other_worker(cluster: Cluster, point: str) -> None:
    cluster.start_worker("a", DIFFUSION_FAILPOINTS=f"{point}=60", **FAST)
    with cluster.client() as http:
        job = submit(http, num_inference_steps=3, num_images=2)
        stalled_at(cluster.workers["a"], point)
        cluster.start_worker("b", **FAST)  # arrives while a stalls, so the job cannot go to b first
        cluster.workers["a"].kill()
        finished(cluster, job["id"])
    audit(cluster, [job["id"]], attempts=2)
    assert cluster.worker_of(job["id"]) == "b"
    assert cluster.metric("diffusion_jobs_requeued_total", "b") == 1


def test_a_single_worker_killed_and_restarted_runs_the_job_again(cluster: Cluster) -> None:
    cluster.start_worker("a", **FAST)
    with cluster.client() as http:
        job = submit(http, num_inference_steps=80)
        running_at(cluster, job["id"], "denoising", step=3)
        cluster.workers["a"].kill()
        cluster.start_worker("a2", **FAST)  # the supervisor's restart
        finished(cluster, job["id"])
    audit(cluster, [job["id"]], attempts=2)


def test_a_long_pause_outside_the_step_loop_is_not_a_dead_worker(cluster: Cluster) -> None:
    # The decode stalls 8 s: four times the 2 s heartbeat TTL. The heartbeat thread keeps the job alive.
    cluster.start_worker("a", DIFFUSION_FAILPOINTS="decode=8", **FAST)
    cluster.start_worker("b", **FAST)
    with cluster.client() as http:
        jobs = [submit(http, num_inference_steps=3, seed=s) for s in range(2)]
        stalled_at(cluster.workers["a"], "decode")
        for job in jobs:
            finished(cluster, job["id"])
    audit(cluster, [j["id"] for j in jobs], attempts=1)
    assert (
        cluster.metric("diffusion_jobs_requeued_total", "a") + cluster.metric("diffusion_jobs_requeued_total", "b") == 0
    ), "nothing was taken for dead"


def test_sigterm_finishes_the_running_job_then_exits_0(cluster: Cluster) -> None:
    worker = cluster.start_worker("a", **FAST)
    with cluster.client() as http:
        job = submit(http, num_inference_steps=40)
        running_at(cluster, job["id"], "denoising", step=2)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(120) == 0
    audit(cluster, [job["id"]], attempts=1)


def test_a_second_sigterm_hands_the_job_back_to_be_run_again(cluster: Cluster) -> None:
    worker = cluster.start_worker("a", **FAST)
    with cluster.client() as http:
        job = submit(http, num_inference_steps=LONG)
        running_at(cluster, job["id"], "denoising", step=2)
        worker.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # RQ takes two signals within a second for one
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(60)
        assert http.get(f"/v1/generations/{job['id']}").json()["status"] == "queued", "shown queued, not lost"
        cluster.start_worker("b", **FAST)
        running_at(cluster, job["id"], "denoising", step=2)
        http.post(f"/v1/generations/{job['id']}/cancel")
    record = cluster.store.get(job["id"])
    assert record and record.attempts == 2 and cluster.worker_of(job["id"]) == "b"


def test_killed_mid_batch_every_job_of_the_batch_runs_again_once(cluster: Cluster) -> None:
    worker = cluster.start_worker("a", DIFFUSION_FAILPOINTS="decode=60", **FAST)
    os.kill(worker.proc.pid, signal.SIGSTOP)  # the jobs queue up while it is stopped...
    with cluster.client() as http:
        jobs = [submit(http, num_inference_steps=3, seed=s)["id"] for s in range(4)]
    os.kill(worker.proc.pid, signal.SIGCONT)  # ...and it takes the first and claims the others into its batch
    stalled_at(worker, "decode")
    assert [cluster.worker_of(j) for j in jobs] == ["a"] * 4, "one batch on a"
    cluster.start_worker("b", **FAST)
    worker.kill()
    for job_id in jobs:
        finished(cluster, job_id)
    audit(cluster, jobs, attempts=2)
    assert {cluster.worker_of(j) for j in jobs} == {"b"}
    assert cluster.metric("diffusion_jobs_requeued_total", "b") == 4
