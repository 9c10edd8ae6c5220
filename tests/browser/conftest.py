"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and a stack on the default model.

Chromium comes from the system's packages (`make browser` installs it); Playwright's own browser
download is never used. Without Chromium these tests are skipped with a banner at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import stack_env
from tests.helpers import ROOT, RedisServer, Service, start_api, start_worker, wait_ready

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
MISSING: list[str] = []


def chromium_path() -> str | None:
    """$DIFFUSION_CHROMIUM, else the first Chromium on the PATH."""
    configured = os.environ.get("DIFFUSION_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner nobody can miss when the browser tests did not run."""
    if MISSING:
        terminalreporter.write_sep("!", "BROWSER TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(MISSING[0], red=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium (Debian's package) under Playwright, for one test module.

    Not for the session: Playwright's sync API keeps an asyncio loop running on the main thread
    while it is started, and later tests that call asyncio.run() would find it there.
    """
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        message = "Chromium or Playwright is missing: run `make browser` (apt-get install chromium) and `make install`"
        MISSING.append(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shapes(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API + one worker on the embedded default model (`shapes`); long jobs allowed, for cancelling."""
    tmp = tmp_path_factory.mktemp("browser")
    prefix = f"b{uuid.uuid4().hex[:10]}"
    env = stack_env(
        redis_server.url,
        prefix,
        tmp / "images",
        DIFFUSION_DEFAULT_MODEL="shapes",
        DIFFUSION_SERVED_MODELS="[]",
        DIFFUSION_MODELS_FILE=str(ROOT / "deploy" / "models.json"),
        DIFFUSION_MAX_INFERENCE_STEPS="100000",
    )
    services: list[Service] = [start_api(env, tmp / "api.log")]
    worker_env = {**env, "DIFFUSION_WORKER_ID": f"{prefix}-w"}
    services.append(start_worker(ROOT / "worker" / "models" / "shapes", worker_env, tmp / "worker.log", name="shapes"))
    try:
        wait_ready(services[1], Redis.from_url(redis_server.url), f"{prefix}.generate.shapes", f"{prefix}-w")
        yield f"http://127.0.0.1:{services[0].port}"
    finally:
        for service in reversed(services):
            service.stop()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: $DIFFUSION_SCREENSHOT_DIR (e.g. docs/) when set, else a temporary folder."""
    folder = Path(os.environ.get("DIFFUSION_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
