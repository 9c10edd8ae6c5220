"""Session fixtures: a private redis-server, tiny pipelines built from configs, real API and worker processes."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.helpers import RedisServer, Service, start_api, start_worker, wait_ready

# Two cores run pytest, the API and up to two workers at once: one intra-op thread each avoids
# OpenMP threads spinning against each other (a 5-7x slowdown measured on the 2-core CI machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SECRET = "test-signing-secret"

# `make test` runs the suite in two pytest-xdist processes, a test file per unit of work (`--dist loadfile`),
# so a module's stack starts once. The files that take minutes go first, so the two processes end together;
# the rest keep their order.
FIRST = (
    "tests/integration/test_compiled_loras.py",
    "tests/worker/test_compiled_matrix.py",
    "tests/faults/test_worker_faults.py",
    "tests/faults/test_redis_faults.py",
    "tests/worker/test_compiling.py",
    "tests/worker/test_gpu_check_smoke.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first (a stable sort: every file's tests keep their order)."""
    rank = {module: i for i, module in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(FIRST)))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate themselves with their own key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    """A client of the session's redis-server."""
    return Redis.from_url(redis_server.url)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone, so no two tests share queues or records."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable-Diffusion-layout pipeline (UNet, 64 px) saved in the diffusers layout."""
    from worker.tiny import build_sd

    return build_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable-Diffusion-3-layout pipeline (MMDiT transformer, flow matching, 64 px)."""
    from worker.tiny import build_sd3

    return build_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(scope="session")
def lora_dir(tiny_sd: Path, tiny_sd3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random LoRAs: two for the tiny UNet (sd-a, sd-b), one for the tiny transformer (sd3-a)."""
    from worker.tiny import build_lora

    folder = tmp_path_factory.mktemp("loras")
    build_lora(tiny_sd, folder / "sd-a.safetensors", seed=1)
    build_lora(tiny_sd, folder / "sd-b.safetensors", seed=2)
    build_lora(tiny_sd3, folder / "sd3-a.safetensors", seed=3)
    return folder


@pytest.fixture(scope="session")
def hotswap_loras(tiny_sd: Path, lora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The adapters of the compiled (hot-swapping) tests: sd-a, sd-b (rank 4, attention q/k/v/out), sd-r8
    (rank 8), sd-qk (q/k only), sd-te (with text-encoder weights), sd-ff (feed-forward layers: outside the
    widest adapter's), sd3-a (another architecture). Every compiled tiny-sd worker of the suite serves this
    one folder, so their denoisers get the same slots, the same graphs and, after the first, inductor's cache:
    each further compile costs seconds instead of a minute and a half."""
    from worker.tiny import build_lora

    folder = tmp_path_factory.mktemp("hotswap-loras")
    for name in ("sd-a", "sd-b", "sd3-a"):
        shutil.copy(lora_dir / f"{name}.safetensors", folder)
    build_lora(tiny_sd, folder / "sd-r8.safetensors", seed=4, rank=8)
    build_lora(tiny_sd, folder / "sd-qk.safetensors", seed=5, targets=("to_q", "to_k"))
    build_lora(tiny_sd, folder / "sd-ff.safetensors", seed=6, targets=("ff.net.2",))
    build_lora(tiny_sd, folder / "sd-te.safetensors", seed=7, text_encoder=True)
    return folder


@pytest.fixture(scope="session")
def tiny_controlnet(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ControlNet for the tiny UNet pipeline."""
    from worker.tiny import build_controlnet

    return build_controlnet(tiny_sd, tmp_path_factory.mktemp("controlnets") / "edges", seed=4)


@dataclass
class Stack:
    """A running API plus workers sharing one Redis key prefix and one storage directory."""

    api: Service
    workers: dict[str, Service]
    redis: Redis
    prefix: str
    env: dict[str, str]

    @property
    def storage(self) -> Path:
        """The image directory API and workers share."""
        return Path(self.env["DIFFUSION_STORAGE_URL"])

    @property
    def base(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.api.port}"

    def client(self) -> httpx.Client:
        """HTTP client against the API."""
        return httpx.Client(base_url=self.base, timeout=10)


def stack_env(redis_url: str, prefix: str, storage: Path, **extra: str) -> dict[str, str]:
    """Environment shared by the API and the workers of one stack."""
    return {
        "REDIS_URL": redis_url,
        "DIFFUSION_KEY_PREFIX": prefix,
        "DIFFUSION_STORAGE_URL": str(storage),
        "DIFFUSION_URL_SIGNING_SECRET": SECRET,
        "DIFFUSION_DEFAULT_MODEL": "tiny-sd",
        "DIFFUSION_SERVED_MODELS": '["tiny-sd","tiny-sd3"]',
        **extra,
    }


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tiny_sd: Path,
    tiny_sd3: Path,
    lora_dir: Path,
    tiny_controlnet: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """API + one worker per tiny model (UNet and transformer), started once per test module.

    A module may set STACK_ENV (extra settings), STACK_MODELS (which workers to start) and STACK_LORAS (the
    name of the fixture giving the LoRA folder; `lora_dir` unless set).
    """
    tmp = tmp_path_factory.mktemp("stack")
    prefix = f"m{uuid.uuid4().hex[:10]}"
    env = stack_env(
        redis_server.url,
        prefix,
        tmp / "images",
        DIFFUSION_LORA_DIR=str(request.getfixturevalue(getattr(request.module, "STACK_LORAS", "lora_dir"))),
        **getattr(request.module, "STACK_ENV", {}),
    )
    redis = Redis.from_url(redis_server.url)
    api = start_api(env, tmp / "api.log")
    sources = {"tiny-sd": tiny_sd, "tiny-sd3": tiny_sd3}
    workers = {}
    for model in getattr(request.module, "STACK_MODELS", ("tiny-sd", "tiny-sd3")):
        suffix = "sd" if model == "tiny-sd" else "sd3"
        own = {"DIFFUSION_CONTROLNETS": json.dumps({"edges": str(tiny_controlnet)})} if model == "tiny-sd" else {}
        workers[model] = start_worker(
            sources[model],
            {**env, **own, "DIFFUSION_WORKER_ID": f"{prefix}-{suffix}"},
            tmp / f"w-{suffix}.log",
            name=model,
        )
    try:
        for model, worker in workers.items():
            suffix = "sd" if model == "tiny-sd" else "sd3"
            wait_ready(worker, redis, f"{prefix}.generate.{model}", f"{prefix}-{suffix}")
        yield Stack(api, workers, redis, prefix, env)
    finally:
        for worker in workers.values():
            worker.stop()
        api.stop()
