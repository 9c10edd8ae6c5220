"""Times each denoising step without stalling the device: from the denoiser's first forward of a step to the
end-of-step callback.

On CUDA the two ends are device events recorded on the stream; a step's duration is read once its end
event has completed (polled at later steps, and waited for when the batch ends), so the host never
synchronises the device per step and the histogram still measures device time. On the CPU the host
clock is the device clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

Observe = Callable[[float], None]  # one step's seconds


class StepClock:
    """Marks step starts (a forward pre-hook on the denoiser) and ends (the step callback)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._started: Any = None
        self._pending: deque[tuple[Any, Any, Observe]] = deque()

    def mark_forward(self, *_: Any) -> None:
        """Forward pre-hook: the step starts at its first denoiser call (CFG may call it twice)."""
        if self._started is None:
            if self.cuda:
                self._started = torch.cuda.Event(enable_timing=True)
                self._started.record()
            else:
                self._started = time.perf_counter()

    def lap(self, observe: Observe) -> None:
        """The step ended: `observe` gets its seconds (now on the CPU, once the device got there on CUDA)."""
        started, self._started = self._started, None
        if started is None:
            return
        if not self.cuda:
            observe(time.perf_counter() - started)
            return
        ended = torch.cuda.Event(enable_timing=True)
        ended.record()
        self._pending.append((started, ended, observe))
        self._collect(wait=False)

    def reset(self) -> None:
        """Forget a step that started but never ended (before a new batch)."""
        self._started = None

    def flush(self) -> None:
        """Report every step still pending (waits for the device: call when the batch has ended)."""
        self._collect(wait=True)

    def _collect(self, wait: bool) -> None:
        while self._pending:
            started, ended, observe = self._pending[0]
            if not wait and not ended.query():
                return
            ended.synchronize()
            self._pending.popleft()
            observe(started.elapsed_time(ended) / 1000.0)
