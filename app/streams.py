"""One Redis reader for every event stream of this API process, and each event rendered once.

SSE clients and OpenAI long-polls follow a job's Redis stream. Instead of one blocking XREAD per
client, a hub task reads every watched job's stream in one XREAD (a private "wake" stream lets a new
subscription interrupt the block) and hands each entry to the job's subscribers; N watchers of one
job cost one read per event, not N, and one Redis connection in all. The number of subscribers per
process is capped (`DIFFUSION_MAX_EVENT_STREAMS`): past it a new stream gets 429 `overloaded`.

A subscriber registers before it reads the backlog after its Last-Event-ID, and the hub starts a
newly watched stream after the entry that was last when the subscriber registered, so no entry falls
between the backlog and the live feed; duplicates are dropped by entry id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.errors import Overloaded

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]  # (stream entry id, fields)
BLOCK_MS = 5000
POOL_CONNECTIONS = 32  # for subscribers' short commands
POOL_WAIT_SECONDS = 30  # how long a burst of new subscribers may queue for one of them


@dataclass
class _Watch:
    """One watched stream: its subscribers' queues, and the id of the last entry handed out (None until the
    first subscriber has read where the stream ends; `known` is set then, or when that read failed)."""

    cursor: str | None = None
    queues: set[asyncio.Queue[Entry]] = field(default_factory=set)
    known: asyncio.Event = field(default_factory=asyncio.Event)


class Subscription:
    """One subscriber's view of a stream: `backlog()` once, then `next()` for each newer entry."""

    def __init__(self, redis: AsyncRedis, key: str, after: str, queue: asyncio.Queue[Entry]) -> None:
        self.redis, self.key, self.last, self.queue = redis, key, after, queue

    async def backlog(self) -> list[Entry]:
        """The entries after the subscriber's Last-Event-ID that exist now."""
        low = f"({self.last}" if self.last != "0-0" else "-"
        raw: Any = await self.redis.xrange(self.key, min=low)
        entries = [(i.decode(), f) for i, f in raw]
        if entries:
            self.last = entries[-1][0]
        return entries

    async def next(self, timeout: float) -> Entry | None:
        """The next newer entry, or None when none came within `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                entry_id, fields = await asyncio.wait_for(self.queue.get(), max(0.0, left))
            except TimeoutError:
                return None
            if _newer(entry_id, self.last):
                self.last = entry_id
                return entry_id, fields


def _newer(a: str, b: str) -> bool:
    """Whether stream id `a` comes after `b`."""
    (a_ms, a_seq), (b_ms, b_seq) = (tuple(int(x) for x in i.split("-")) for i in (a, b))
    return (a_ms, a_seq) > (b_ms, b_seq)


class EventHub:
    """Fans the entries of watched Redis streams out to subscribers; start it in the app's lifespan."""

    def __init__(self, redis_url: str, prefix: str, max_subscribers: int, timeout_seconds: float) -> None:
        # The one blocking read has a connection of its own, whose socket timeout must outlast the block
        # (redis-py 8 defaults to 5 s). Subscribers' short commands (where a stream ends, its backlog) share
        # a pool with the API's Redis timeout; a burst of them waits for a free connection (the waits hold
        # no thread) instead of failing with "Too many connections".
        self._reader = AsyncRedis.from_url(
            redis_url, socket_connect_timeout=timeout_seconds, socket_timeout=BLOCK_MS / 1000 + 10, max_connections=1
        )
        pool = BlockingConnectionPool.from_url(
            redis_url,
            max_connections=POOL_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
        )
        self.redis = AsyncRedis.from_pool(pool)
        self.max_subscribers = max_subscribers
        self.wake_key = f"{prefix}:hub-wake:{uuid.uuid4().hex}"
        self._watches: dict[str, _Watch] = {}
        self._subscribers = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Begin reading."""
        self._task = asyncio.create_task(self._read(), name="event-hub")

    async def stop(self) -> None:
        """Stop reading and close the connections; returns within one blocking read and the Redis timeout."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Waited for with a bound, and the loop also ends on the flag: redis-py's asyncio client sometimes
            # loses a cancellation that lands in a read (the XREAD returns as if nothing happened; seen once
            # in 400 starts and stops on loaded cores), and the loop then blocked in XREAD after XREAD for ever
            # (a test client's shutdown waited 300 s on it in a CI-like run).
            done, _ = await asyncio.wait({self._task}, timeout=BLOCK_MS / 1000 + 5)
            if not done:
                log.warning("event hub reader did not stop")
        with contextlib.suppress(Exception):
            await self.redis.delete(self.wake_key)
        await self.redis.aclose()
        await self._reader.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, key: str, after: str) -> AsyncIterator[Subscription]:
        """Follow stream `key` after entry id `after` (`0-0`: from its start)."""
        if self._subscribers >= self.max_subscribers:
            raise Overloaded(
                f"this server follows {self.max_subscribers} event streams already; retry shortly or poll",
                headers={"Retry-After": "5"},
            )
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        self._subscribers += 1
        # The watch is registered before any await: subscribers arriving together share it (each creating its
        # own, the later ones replaced the first and its subscribers never heard of their job again).
        watch = self._watches.get(key)
        first = watch is None
        if watch is None:
            watch = self._watches[key] = _Watch()
        watch.queues.add(queue)
        try:
            if first:
                try:
                    last: Any = await self.redis.xrevrange(key, count=1)
                    watch.cursor = last[0][0].decode() if last else "0-0"
                finally:
                    watch.known.set()
                await self.redis.xadd(self.wake_key, {"w": "1"}, maxlen=10, approximate=True)
            else:
                await watch.known.wait()
            if watch.cursor is None:
                raise RedisConnectionError(f"could not read where stream {key} ends")
            yield Subscription(self.redis, key, after, queue)
        finally:
            self._subscribers -= 1
            watch.queues.discard(queue)
            if not watch.queues and self._watches.get(key) is watch:
                del self._watches[key]

    async def _read(self) -> None:
        wake_cursor = "$"
        while not self._stopping:
            streams: dict[Any, Any] = {self.wake_key: wake_cursor}
            streams.update({key: watch.cursor for key, watch in self._watches.items() if watch.cursor is not None})
            try:
                batch: Any = await self._reader.xread(streams, count=200, block=BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away for a moment: retry; subscribers see keep-alives meanwhile
                if self._stopping:
                    return
                log.warning("event hub read failed", exc_info=True)
                await asyncio.sleep(1)
                continue
            for raw_key, entries in batch or []:
                key = raw_key.decode()
                if key == self.wake_key:
                    wake_cursor = entries[-1][0].decode()
                    continue
                watch = self._watches.get(key)
                if watch is None:
                    continue
                for entry_id, fields in entries:
                    watch.cursor = entry_id.decode()
                    for queue in watch.queues:
                        queue.put_nowait((watch.cursor, fields))


class SharedRenders:
    """Each event's job object rendered once per base URL, however many streams send it."""

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._tasks: OrderedDict[tuple[str, str, str], asyncio.Task[str | None]] = OrderedDict()

    async def get(self, key: tuple[str, str, str], render: Callable[[], Awaitable[str | None]]) -> str | None:
        """The rendering of `key` (job id, entry id, base URL), made by the first caller, awaited by all."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(render())
            self._tasks[key] = task
            while len(self._tasks) > self.capacity:
                self._tasks.popitem(last=False)
        return await asyncio.shield(task)


class LongPolls:
    """How many requests of this process wait for their job now (one event loop: a plain counter)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.waiting = limit, 0
