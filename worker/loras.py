"""LoRA adapters per request: found in a directory, loaded on first use, kept in an LRU, active for one job.

At start-up every `*.safetensors` file of the directory is tried on the loaded pipeline; the ones
that load are the LoRAs that fit this model, and the worker publishes them. A job activates its
adapters with their scales and deactivates them afterwards, so the next job without them produces
exactly what it would have without any LoRA ever loaded (tested).

Two implementations: `LoraLibrary` here for an eager denoiser (named peft adapters, enabled per
job) and `worker.hotswap.HotswapLoras` for a compiled one (fixed slots, weights swapped in place:
no recompile).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

from diffusers import DiffusionPipeline

from contract.jobs import LoraSpec
from worker.failures import InvalidInput

log = logging.getLogger(__name__)


class LoraError(InvalidInput):
    """An adapter that does not exist here or does not fit the model."""


def file_sha256(path: Path) -> str:
    """Content hash of an adapter file (for the reproducibility record)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def not_fitting(name: str, exc: Exception) -> None:
    log.info("LoRA does not fit this model", extra={"lora": name, "reason": str(exc)[:300]})


class Adapters:
    """What both implementations share: the adapters that fit, their hashes, the per-job checks."""

    def __init__(self, pipe: DiffusionPipeline, capacity: int) -> None:
        self.pipe = pipe
        self.capacity = capacity
        self.available: dict[str, Path] = {}
        self.hashes: dict[str, str] = {}

    @property
    def max_per_job(self) -> int | None:
        """Most adapters one job may use on this worker (None: only the API's limit)."""
        return None

    def _add(self, name: str, path: Path) -> None:
        self.available[name] = path
        self.hashes[name] = file_sha256(path)

    def published(self) -> list[dict[str, str]]:
        """What the worker tells the API: each fitting adapter and its content hash."""
        return [{"name": name, "sha256": self.hashes[name]} for name in self.available]

    def _check(self, requested: list[LoraSpec]) -> None:
        for item in requested:
            if item.name not in self.available:
                raise LoraError(
                    f"LoRA {item.name!r} does not fit this model; available: {', '.join(self.available) or 'none'}"
                )

    def activate(self, requested: list[LoraSpec]) -> None:
        """Make exactly these adapters, with their scales, act on the next generation."""
        raise NotImplementedError

    def deactivate(self) -> None:
        """Back to the base model, exactly."""
        raise NotImplementedError


class LoraLibrary(Adapters):
    """The adapters of an eager pipeline as named peft adapters; not thread-safe (one job at a time)."""

    def __init__(self, pipe: DiffusionPipeline, directory: Path | None, capacity: int) -> None:
        super().__init__(pipe, capacity)
        self._loaded: OrderedDict[str, None] = OrderedDict()
        if directory is not None and directory.is_dir():
            self._scan(directory)

    def _scan(self, directory: Path) -> None:
        for path in sorted(directory.glob("*.safetensors")):
            name = path.stem
            try:
                self.pipe.load_lora_weights(str(path), adapter_name=name)
                # A file for another architecture may load nothing at all, without an error.
                registered = {a for adapters in self.pipe.get_list_adapters().values() for a in adapters}
                if name not in registered:
                    raise LoraError("no module of this model matches its keys")
            except Exception as exc:  # whatever the failure, it does not fit this model
                not_fitting(name, exc)
                self._forget(name)
                continue
            self.pipe.delete_adapters(name)
            self._add(name, path)
        log.info("LoRAs that fit", extra={"loras": ",".join(self.available) or "none"})

    def _forget(self, name: str) -> None:
        try:
            self.pipe.delete_adapters(name)
        except Exception:
            log.debug("nothing to delete for %s", name)

    def activate(self, requested: list[LoraSpec]) -> None:
        """Load (LRU) and enable exactly these adapters with their scales."""
        if not requested:
            self.deactivate()
            return
        self._check(requested)
        for item in requested:
            self._ensure_loaded(item.name)
        self.pipe.enable_lora()
        self.pipe.set_adapters([i.name for i in requested], adapter_weights=[i.scale for i in requested])

    def deactivate(self) -> None:
        """Disable every adapter: the base model is back exactly."""
        if self._loaded:
            self.pipe.disable_lora()

    def _ensure_loaded(self, name: str) -> None:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return
        while len(self._loaded) >= self.capacity:
            evicted, _ = self._loaded.popitem(last=False)
            self.pipe.delete_adapters(evicted)
        self.pipe.load_lora_weights(str(self.available[name]), adapter_name=name)
        self._loaded[name] = None
