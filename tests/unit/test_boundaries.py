"""Import boundaries: the API never pulls torch, diffusers or the worker; the worker never pulls FastAPI."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {line.split(".")[0] for line in out.stdout.splitlines()}


def test_app_leaves_torch_diffusers_and_worker_out() -> None:
    loaded = modules_after("import app.main, app.__main__; app.main.create_app")
    assert not loaded & {"torch", "diffusers", "transformers", "worker"}, loaded & {"torch", "diffusers", "worker"}


def test_worker_leaves_fastapi_and_app_out() -> None:
    loaded = modules_after("import worker.__main__, worker.process, worker.tasks, worker.runner")
    assert "torch" in loaded
    assert not loaded & {"fastapi", "starlette", "uvicorn", "app"}


def test_contract_needs_neither() -> None:
    loaded = modules_after("import contract.jobs, contract.records, contract.storage, contract.settings")
    assert not loaded & {"fastapi", "torch", "app", "worker"}


def test_tracing_off_imports_no_tracing_sdk_or_exporter() -> None:
    """Tracing is off by default and then imports neither the SDK's tracing nor the exporter (protobuf,
    requests: ~160 ms). redis-py imports parts of the SDK by itself when it is installed (its metrics)."""
    code = (
        "import sys, app.main, worker.runner; from contract.tracing import Tracing; "
        "assert not Tracing.open(None, 'x').on; print('\\n'.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    heavy = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "google.protobuf")
    loaded = [m for m in out.stdout.splitlines() if m.startswith(heavy)]
    assert not loaded, loaded
