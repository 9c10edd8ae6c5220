"""The API's view of RQ workers, on a real Redis: counts only live registrations and leaves the API's client
as it was configured (RQ's `Worker` objects raise a connection pool's socket timeout to minutes)."""

from __future__ import annotations

from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from app.queue import JobQueue
from contract.keys import queue_name
from tests.helpers import RedisServer


def test_ready_workers_counts_live_registrations_and_keeps_the_clients_timeout(
    redis_server: RedisServer, redis: Redis, prefix: str
) -> None:
    api_redis = Redis.from_url(redis_server.url, socket_timeout=1.5)
    queue = JobQueue(api_redis, prefix, 60, 0, 60)
    assert queue.ready_workers("tiny-sd") == 0

    name = queue_name(prefix, "tiny-sd", "normal")
    workers = [
        Worker([Queue(name, connection=redis, serializer=JSONSerializer)], connection=redis, name=f"{prefix}-{i}")
        for i in range(3)
    ]
    for worker in workers:
        worker.register_birth()
    redis.delete(workers[2].key)  # died without deregistering: its key expired
    other = Worker(
        [Queue(queue_name(prefix, "other", "normal"), connection=redis)], connection=redis, name=f"{prefix}-o"
    )
    other.register_birth()

    assert queue.ready_workers("tiny-sd") == 2
    assert queue.ready_workers("other") == 1
    assert api_redis.connection_pool.connection_kwargs["socket_timeout"] == 1.5
