"""Progress off the step's critical path: a thread publishes each running job's newest progress to its record.

The step callback only notes the step in memory and wakes this thread; the record write (and the
event and webhook entries the same script appends) happens here. Its answer tells a job that it was
canceled or superseded, which the next step callback sees: a cancel still stops the job within a
step or two, and the device never waits on a Redis round trip. When steps are faster than Redis,
intermediate steps are coalesced: the newest one is published.
"""

from __future__ import annotations

import logging
import threading

from worker.jobrun import JobRun

log = logging.getLogger(__name__)


class ProgressPublisher:
    """One daemon thread per worker; `watch` a run while it denoises, `flush` before its end is written."""

    def __init__(self) -> None:
        self._runs: dict[str, JobRun] = {}
        self._wake = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def watch(self, run: JobRun) -> None:
        """Publish this run's progress from now on."""
        with self._wake:
            self._runs[run.job_id] = run

    def forget(self, run: JobRun) -> None:
        """Stop publishing for this run (after `flush`)."""
        with self._wake:
            self._runs.pop(run.job_id, None)

    def nudge(self) -> None:
        """There is news (called from the step callback: cheap, never blocks on Redis)."""
        with self._wake:
            self._idle.clear()
            self._wake.notify()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every noted progress is published (before a job's final write, which must come last)."""
        self.nudge()
        self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not any(run.has_updates for run in self._runs.values()):
                    self._idle.set()
                    self._wake.wait()
                runs = list(self._runs.values())
            for run in runs:
                for progress, preview in run.take_updates():
                    try:
                        run.publish(progress, preview)
                    except Exception:  # Redis unreachable for a moment: the next step's progress tries again
                        log.warning("progress not published", extra={"job_id": run.job_id}, exc_info=True)
