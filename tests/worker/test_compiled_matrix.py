"""A compiled worker (DIFFUSION_COMPILE=true) on the default model compiles nothing while serving, whatever an
ordinary request or a cross-request batch brings: real inductor compilation on the CPU.

The matrix is the GPU check's own (`benchmarks.gpu_measure.recompile_matrix`): every scheduler the model
publishes, guidance 0 / 1 / 7.5 with 1..8 images per request, and cross-request batches of every size
2..8 (several jobs in one call), at two steps a call, at every size of DIFFUSION_WARMUP_SIZES. One small
warm-up size keeps it cheap: each size is two graphs (one to 15 denoiser rows, and 16 rows: the largest
batch with guidance), about a minute of compiling on two cores with an empty inductor cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_measure import GUIDANCES, compilations, recompile_matrix
from tests.helpers import warm
from worker.pipeline import WarmPipeline
from worker.process import model_info
from worker.settings import DEFAULT_MODEL_SOURCE

MODEL = "shapes-compiled"


@pytest.fixture(scope="module")
def compiled() -> Iterator[WarmPipeline]:
    # Dynamo remembers, per code object, which input sizes it saw vary, across every model of a process
    # (it then compiles those sizes dynamic): start and leave it fresh, as in a worker process, so that
    # neither this module nor a later one (tests/integration/test_compiled_loras.py) compiles other graphs than alone.
    torch._dynamo.reset()
    pipeline = warm(Path(DEFAULT_MODEL_SOURCE), compile=True, warmup_sizes=["64x64"], model_name=MODEL, cpu_threads=1)
    pipeline.warm_up()
    yield pipeline
    torch._dynamo.reset()


def test_no_request_of_the_matrix_compiles_while_serving(compiled: WarmPipeline) -> None:
    assert compiled.settings.max_batch_images == 8, "the default batch limit: 1..8 images, batches up to 8"
    published = model_info(compiled.settings, compiled)
    assert set(published.schedulers) == set(compiled.scheduler_names) and len(published.schedulers) > 1
    assert compilations(MODEL, "warmup") >= 1, "the denoiser is compiled, at warm-up"
    for width, height in compiled.warm_sizes():
        assert width == height, "the matrix runs square sizes"
        result = recompile_matrix(compiled, width)
        assert result["guidances"] == list(GUIDANCES)
        assert result["calls"] == len(published.schedulers) + 3 * 8 + 7
        assert result["serving_compilations_during"] == 0, result
    assert compilations(MODEL, "serving") == 0
