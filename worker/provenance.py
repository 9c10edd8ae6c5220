"""What makes an image reproducible: model fingerprint, scheduler, seed, dtype, device, library versions."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import diffusers
import torch

EDGE_BYTES = 1 << 20


def model_fingerprint(source: str, local: Path | None) -> str:
    """A content hash of a local model folder: every file's path, size and first and last MiB.

    Hashing whole weight files (gigabytes) would slow start-up by seconds to minutes; the edges of
    a safetensors file hold its header (names, shapes, dtypes) and enough weights to tell versions
    apart. Hub snapshots are named by their commit, which is used as it is.
    """
    if local is None:
        return f"hub:{source}"
    resolved = local.resolve()
    if resolved.parent.name == "snapshots":
        return f"hub-revision:{resolved.name}"
    digest = hashlib.sha256()
    for path in sorted(p for p in resolved.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(resolved)}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(EDGE_BYTES))
            if size > 2 * EDGE_BYTES:
                handle.seek(-EDGE_BYTES, 2)
                digest.update(handle.read(EDGE_BYTES))
    return f"sha256:{digest.hexdigest()[:16]}"


def record(
    model: str, fingerprint: str, scheduler: Any, seed: int, dtype: torch.dtype, device: torch.device, compiled: bool
) -> dict[str, Any]:
    """The reproducibility record of one image."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {
        "model": model,
        "model_revision": fingerprint,
        "scheduler": {"class": type(scheduler).__name__, "config": config},
        "seed": seed,
        "noise": "cpu torch.Generator per image",
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "compiled": compiled,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "loras": [],
    }
