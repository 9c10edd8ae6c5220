"""LoRA adapters per request: found in a directory, loaded on first use, kept in an LRU, active for one job.

At start-up every `*.safetensors` file of the directory is tried on the loaded pipeline; the ones
that load are the LoRAs that fit this model, and the worker publishes them. A job activates its
adapters with their scales and deactivates them afterwards, so the next job without them produces
exactly what it would have without any LoRA ever loaded (tested).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline

log = logging.getLogger(__name__)


class LoraError(ValueError):
    """An adapter that does not exist here or does not fit the model."""


def file_sha256(path: Path) -> str:
    """Content hash of an adapter file (for the reproducibility record)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LoraLibrary:
    """The adapters of one pipeline; not thread-safe (a worker runs one job at a time)."""

    def __init__(self, pipe: DiffusionPipeline, directory: Path | None, capacity: int) -> None:
        self.pipe = pipe
        self.capacity = capacity
        self.available: dict[str, Path] = {}
        self.hashes: dict[str, str] = {}
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
                log.info("LoRA does not fit this model", extra={"lora": name, "reason": str(exc)[:200]})
                self._forget(name)
                continue
            self.pipe.delete_adapters(name)
            self.available[name] = path
            self.hashes[name] = file_sha256(path)
        log.info("LoRAs that fit", extra={"loras": ",".join(self.available) or "none"})

    def _forget(self, name: str) -> None:
        try:
            self.pipe.delete_adapters(name)
        except Exception:
            log.debug("nothing to delete for %s", name)

    def published(self) -> list[dict[str, str]]:
        """What the worker tells the API: each fitting adapter and its content hash."""
        return [{"name": name, "sha256": self.hashes[name]} for name in self.available]

    def activate(self, requested: list[dict[str, Any]]) -> None:
        """Load (LRU) and enable exactly these adapters with their scales."""
        if not requested:
            self.deactivate()
            return
        for item in requested:
            if item["name"] not in self.available:
                raise LoraError(f"LoRA {item['name']!r} does not fit this model; available: "
                                f"{', '.join(self.available) or 'none'}")
            self._ensure_loaded(item["name"])
        self.pipe.enable_lora()
        self.pipe.set_adapters([i["name"] for i in requested], adapter_weights=[float(i["scale"]) for i in requested])

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
