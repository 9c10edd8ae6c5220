"""How the command line shows a job's progress: a rich progress bar on a terminal, plain lines otherwise.

Plain lines (no carriage returns, no escape codes) are what logs and CI capture: one line when the
job changes stage or queue position, and one per tenth of its progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from diffusion_client.resources import Job


def describe(job: Job) -> str:
    """One line of where the job is: queue position and ETA, stage and step, or how it ended."""
    progress = job.progress
    if job.status == "queued":
        where = f"position {job.queue_position}" if job.queue_position is not None else "waiting"
        if job.estimated_start_at is not None:
            seconds = max(0.0, (job.estimated_start_at - datetime.now(UTC)).total_seconds())
            where += f", starts in ~{seconds:.0f} s"
        return f"queued ({where})"
    if job.status == "running":
        step = f" step {progress.step}/{progress.total_steps}" if progress.stage == "denoising" else ""
        return f"running: {progress.stage}{step} ({progress.fraction:.0%})"
    if job.status == "failed" and job.error:
        return f"failed: {job.error.type}: {job.error.message}"
    if job.status == "canceled":
        return f"canceled ({job.cancel_reason or 'client'})"
    return job.status


class Display(Protocol):
    """Shows successive states of one job."""

    def update(self, job: Job) -> None:
        """Show this state."""

    def close(self) -> None:
        """The job ended (or we stopped following it)."""


class LineDisplay:
    """Plain lines on a stream: on each change of status, stage or queue position, and every 10 %."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.last: tuple[str, str, int | None, int] | None = None

    def update(self, job: Job) -> None:
        """Print a line if this state differs enough from the last one printed."""
        key = (job.status, job.progress.stage, job.queue_position, int(job.progress.fraction * 10))
        if key != self.last:
            self.last = key
            print(f"job {job.id} {describe(job)}", file=self.out, flush=True)

    def close(self) -> None:
        """Nothing to tidy up."""


class BarDisplay:
    """A rich progress bar redrawn in place (terminals only)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("submitted", total=1.0, detail="")
        self.progress.start()

    def update(self, job: Job) -> None:
        """Move the bar to this state."""
        progress = job.progress
        if job.status == "queued":
            detail = describe(job).removeprefix("queued ")
        elif progress.stage == "denoising":
            detail = f"step {progress.step}/{progress.total_steps}"
        else:
            detail = "" if job.status == "running" else describe(job)
        self.progress.update(self.task, completed=progress.fraction, description=progress.stage, detail=detail)

    def close(self) -> None:
        """Leave the last state of the bar on screen."""
        self.progress.stop()


def display_for(out: IO[str], enabled: bool = True) -> Display:
    """A bar when `out` is a terminal, plain lines otherwise; nothing at all when not `enabled`."""
    if not enabled:
        return _Silent()
    console = Console(file=out)
    return BarDisplay(console) if console.is_terminal else LineDisplay(out)


class _Silent:
    def update(self, job: Job) -> None:
        return

    def close(self) -> None:
        return
