"""Failpoints: named places where a process can be told to stall, so fault tests can kill it exactly there.

`DIFFUSION_FAILPOINTS="decode=5,store=5"` makes `failpoint("decode")` sleep 5 s (and log it) in that
process; unset (production) every failpoint is a dictionary lookup and nothing else. The points:
`decode` (worker: after the last denoising step, before the VAE decode), `store` (worker: before
each image is written), `before_enqueue` (API: input images stored, nothing in Redis yet) and
`after_enqueue` (API: the job is committed to Redis, the answer not yet sent).
The fault-injection suite (tests/faults/) is what uses them.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


def _parse(spec: str) -> dict[str, float]:
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, seconds = item.partition("=")
        points[name] = float(seconds or 0)
    return points


_POINTS = _parse(os.environ.get("DIFFUSION_FAILPOINTS", ""))


def failpoint(name: str) -> None:
    """Stall here for the configured seconds, if this failpoint is armed."""
    seconds = _POINTS.get(name)
    if seconds:
        log.warning("failpoint reached; stalling", extra={"failpoint": name, "seconds": seconds})
        time.sleep(seconds)
