"""Cross-request batching: when a worker takes a job, it also claims queued jobs of its model that can share
the denoising batch, atomically, in priority order, without ever waiting for a batch to fill.

One Lua script looks at the model's queues from the taken job's priority down: it takes the jobs whose
record has the same batch key (`GenerationParams.batch_key`), up to the worker's image budget, and
moves each into its queue's RQ intermediate list (as RQ's own dequeue does), from where the worker
registers it as started. It goes on to a lower priority only once every job of the higher one is
taken, and takes nothing while a job of a higher priority than the taken one waits. A worker killed
between the claim and the registration leaves the jobs in the intermediate lists, which RQ's
maintenance re-queues.
"""

from __future__ import annotations

from redis import Redis
from rq.job import Job
from rq.queue import Queue

from contract.jobs import GenerationParams
from contract.keys import job_key

SCAN_WINDOW = 64  # queued jobs looked at per priority

# KEYS: the model's RQ queue lists, highest priority first, then their intermediate lists in the same order.
# ARGV[1] = position (1-based) of the taken job's queue, ARGV[2] = batch key, ARGV[3] = image budget,
# ARGV[4] = our job record key prefix, ARGV[5] = scan window. Returns {queue position, job id} pairs.
_CLAIM = """
local queues = #KEYS / 2
local from, budget, window = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[5])
local taken = {}
for i = 1, from - 1 do
  if redis.call('LLEN', KEYS[i]) > 0 then return taken end
end
for i = from, queues do
  if budget <= 0 then break end
  local ids = redis.call('LRANGE', KEYS[i], 0, window - 1)
  local waiting = redis.call('LLEN', KEYS[i])
  for _, id in ipairs(ids) do
    if budget <= 0 then break end
    local fields = redis.call('HMGET', ARGV[4] .. id, 'status', 'batch_key', 'params')
    if fields[1] == '"queued"' and fields[2] and cjson.decode(fields[2]) == ARGV[2] then
      local images = cjson.decode(fields[3])['num_images']
      if images <= budget and redis.call('LREM', KEYS[i], 1, id) == 1 then
        redis.call('RPUSH', KEYS[queues + i], id)
        table.insert(taken, {i, id})
        budget = budget - images
        waiting = waiting - 1
      end
    end
  end
  if waiting > 0 then break end
end
return taken
"""


class Claimer:
    """Claims batch companions for the jobs a worker of one model dequeues."""

    def __init__(self, redis: Redis, prefix: str, queues: list[Queue], max_images: int) -> None:
        self.redis, self.queues, self.max_images = redis, queues, max_images
        self.record_prefix = job_key(prefix, "")
        self._script = redis.register_script(_CLAIM)

    def __call__(self, job: Job, queue: Queue) -> list[tuple[Job, Queue]]:
        """Jobs to run in the same batch as `job` (dequeued from `queue`); empty when batching is off."""
        params = GenerationParams.model_validate(job.kwargs["payload"]["params"])
        budget = self.max_images - params.num_images
        if budget <= 0:
            return []
        position = next(i for i, q in enumerate(self.queues, start=1) if q.name == queue.name)
        keys = [q.key for q in self.queues] + [q.intermediate_queue_key for q in self.queues]
        args: list[str | int] = [position, params.batch_key(), budget, self.record_prefix, SCAN_WINDOW]
        taken = self._script(keys=keys, args=args)
        claimed = []
        for index, raw_id in taken:
            source = self.queues[int(index) - 1]
            found = source.fetch_job(raw_id.decode())
            if found is None:  # the RQ job vanished (deleted): nothing to run
                self.redis.lrem(source.intermediate_queue_key, 1, raw_id)
                continue
            claimed.append((found, source))
        return claimed
