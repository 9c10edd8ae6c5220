"""LoRA adapters on a `torch.compile`d denoiser: fixed slots whose weights are swapped in place, never recompiling."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline
from diffusers.loaders.lora_base import (
    disable_lora_for_text_encoder,
    enable_lora_for_text_encoder,
    set_adapters_for_text_encoder,
)
from diffusers.utils.peft_utils import delete_adapter_layers
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.hotswap import prepare_model_for_compiled_hotswap
from torch.nn import Module

from contract.jobs import LoraSpec
from worker.loras import Adapters, LoraError, not_fitting


class HotswapLoras(Adapters):
    """Adapters for a `torch.compile`d denoiser: a fixed set of slots whose weights are swapped in place.

    Loading a new adapter adds modules and a new active-adapter set changes Python state the
    compiled graph is guarded on, so either would recompile. Instead the denoiser gets `slots`
    adapters once, before compiling: each holds the widest available adapter (the one targeting
    the most layers), ranks padded to the largest rank and scalings turned into tensors
    (`peft.utils.hotswap.prepare_model_for_compiled_hotswap`, what diffusers' `enable_lora_hotswap`
    does for one adapter). A job hot-swaps its adapters' weights into slots (diffusers'
    `load_lora_adapter(..., hotswap=True)`, an in-place copy) and sets each slot's scaling tensor in
    place; unused slots get scaling 0, which leaves the base model's output exactly as it is.
    An adapter fits if it has denoiser weights and its layers are among the widest one's. The
    text encoders are not compiled: an adapter's text-encoder weights (if any) load as a named
    adapter there and are enabled per job, as on an eager worker. State dicts and text-encoder
    adapters stay in LRUs bounded by `capacity`.
    """

    def __init__(self, pipe: DiffusionPipeline, directory: Path | None, capacity: int, slots: int) -> None:
        super().__init__(pipe, capacity)
        self.prefix = next(name for name in ("unet", "transformer") if isinstance(getattr(pipe, name, None), Module))
        self.denoiser = getattr(pipe, self.prefix)
        self.slots = slots
        self._names = [f"slot{i}" for i in range(slots)]
        self._in_slot: list[str | None] = [None] * slots
        self._base: list[dict[str, float]] = [{} for _ in range(slots)]
        self._layers: list[tuple[str, Any]] = []
        self._states: OrderedDict[str, tuple[dict[str, Any], Any]] = OrderedDict()
        self._encoders = [
            name
            for name in getattr(pipe, "_lora_loadable_modules", [])
            if name.startswith("text_encoder") and getattr(pipe, name, None) is not None
        ]
        self._encoder_parts: dict[str, list[str]] = {}  # adapter -> text encoders it has weights for
        self._encoders_loaded: OrderedDict[str, None] = OrderedDict()
        if directory is not None and directory.is_dir():
            self._build_slots(sorted(directory.glob("*.safetensors")))

    @property
    def max_per_job(self) -> int | None:
        return self.slots if self.available else None

    def _read(self, path: Path) -> tuple[dict[str, Any], Any]:
        loaded = self.pipe.lora_state_dict(str(path))
        state, alphas = loaded if isinstance(loaded, tuple) else (loaded, None)
        parts = {key.split(".", 1)[0] for key in state}
        foreign = sorted(parts - {self.prefix, *self._encoders})
        if foreign:
            raise LoraError(f"it has weights for {', '.join(foreign)}, which this model does not have")
        if self.prefix not in parts:
            raise LoraError(
                f"it has no {self.prefix} weights (text-encoder-only adapters are not served when compiled)"
            )
        self._encoder_parts[path.stem] = sorted(parts & set(self._encoders))
        return state, alphas

    def _probe(self, path: Path) -> tuple[set[str], int]:
        """Load the adapter once, alone: the layers it targets and its largest rank."""
        state, alphas = self._state(path.stem, path)
        self.denoiser.load_lora_adapter(dict(state), prefix=self.prefix, network_alphas=alphas, adapter_name="probe")
        try:
            layers = {
                n
                for n, m in self.denoiser.named_modules()
                if isinstance(m, BaseTunerLayer) and "probe" in getattr(m, "lora_A", {})
            }
            if not layers:
                raise LoraError("no module of this model matches its keys")
            config = self.denoiser.peft_config["probe"]
            return layers, max([config.r, *config.rank_pattern.values()])
        finally:
            self.denoiser.delete_adapters("probe")

    def _build_slots(self, paths: list[Path]) -> None:
        probed: dict[str, tuple[Path, set[str], int]] = {}
        for path in paths:
            try:
                layers, rank = self._probe(path)
            except Exception as exc:  # whatever the failure, it does not fit this model
                not_fitting(path.stem, exc)
                continue
            probed[path.stem] = (path, layers, rank)
        if not probed:
            return
        widest = max(probed, key=lambda name: (len(probed[name][1]), name))
        state, alphas = self._state(widest, probed[widest][0])
        for slot in self._names:
            self.denoiser.load_lora_adapter(dict(state), prefix=self.prefix, network_alphas=alphas, adapter_name=slot)
        self.denoiser.set_adapters(self._names, [1.0] * self.slots)
        prepare_model_for_compiled_hotswap(self.denoiser, target_rank=max(rank for _, _, rank in probed.values()))
        self._layers = [
            (n, m)
            for n, m in self.denoiser.named_modules()
            if isinstance(m, BaseTunerLayer) and self._names[0] in getattr(m, "scaling", {})
        ]
        for name, (path, layers, _) in probed.items():
            try:
                if not layers <= probed[widest][1]:
                    raise LoraError(
                        f"it targets layers that {widest!r} (the widest adapter, which shapes the "
                        "hot-swap slots) does not"
                    )
                self._swap(0, name, path)  # the same check a job would meet, done once here
                self._load_encoders(name, path)
            except Exception as exc:
                not_fitting(name, exc)
                continue
            self._add(name, path)
        self.deactivate()

    def _state(self, name: str, path: Path | None = None) -> tuple[dict[str, Any], Any]:
        """Adapter `name`'s state dict and alphas, from the LRU or its file."""
        if name in self._states:
            self._states.move_to_end(name)
        else:
            self._states[name] = self._read(path or self.available[name])
            while len(self._states) > self.capacity:
                self._states.popitem(last=False)
        return self._states[name]

    def _swap(self, slot: int, name: str, path: Path | None = None) -> None:
        """Copy adapter `name`'s weights into `slot` in place and remember its scalings at scale 1."""
        state, alphas = self._state(name, path)
        self._in_slot[slot] = None  # half-swapped until this returns
        self.denoiser.load_lora_adapter(
            dict(state), prefix=self.prefix, network_alphas=alphas, adapter_name=self._names[slot], hotswap=True
        )
        self._base[slot] = {n: float(m.scaling[self._names[slot]]) for n, m in self._layers}
        self._in_slot[slot] = name

    def _load_encoders(self, name: str, path: Path | None = None) -> None:
        """Load adapter `name`'s text-encoder weights as a named adapter (LRU), if it has any."""
        if not self._encoder_parts.get(name):
            return
        if name in self._encoders_loaded:
            self._encoders_loaded.move_to_end(name)
            return
        while len(self._encoders_loaded) >= self.capacity:
            evicted, _ = self._encoders_loaded.popitem(last=False)
            for component in self._encoder_parts[evicted]:
                delete_adapter_layers(getattr(self.pipe, component), evicted)
        state, alphas = self._state(name, path)
        for component in self._encoder_parts[name]:
            encoder = getattr(self.pipe, component)
            type(self.pipe).load_lora_into_text_encoder(
                dict(state), alphas, text_encoder=encoder, prefix=component, adapter_name=name, _pipeline=self.pipe
            )
            if name not in getattr(encoder, "peft_config", {}):
                raise LoraError(f"no module of {component} matches its keys")
        self._encoders_loaded[name] = None

    def _activate_encoders(self, wanted: dict[str, float]) -> None:
        for component in self._encoders:
            encoder = getattr(self.pipe, component)
            names = [name for name in wanted if component in self._encoder_parts.get(name, [])]
            if names:
                set_adapters_for_text_encoder(names, encoder, [wanted[name] for name in names])
                enable_lora_for_text_encoder(encoder)
            elif getattr(encoder, "peft_config", None):
                disable_lora_for_text_encoder(encoder)

    def _scale(self, slot: int, scale: float) -> None:
        name, base = self._names[slot], self._base[slot]
        for layer, module in self._layers:
            module.scaling[name].fill_(base.get(layer, 0.0) * scale)

    def activate(self, requested: list[LoraSpec]) -> None:
        """Put each requested adapter in a slot (where it already is, if it is) and set the slots' scales."""
        self._check(requested)
        if len(requested) > self.slots:
            raise LoraError(f"at most {self.slots} LoRAs per job on this worker (its hot-swap slots)")
        wanted = {item.name: item.scale for item in requested}
        free = [s for s in range(self.slots) if self._in_slot[s] not in wanted]
        placed = {name: s for s, name in enumerate(self._in_slot) if name is not None and name in wanted}
        for name in wanted:
            if name not in placed:
                placed[name] = free.pop(0)
                self._swap(placed[name], name)
        scales = {slot: wanted[name] for name, slot in placed.items()}
        for slot in range(self.slots):
            self._scale(slot, scales.get(slot, 0.0))
        for name in wanted:
            self._load_encoders(name)
        self._activate_encoders(wanted)

    def deactivate(self) -> None:
        """Scale 0 on every slot and text-encoder adapters off: exactly the base model."""
        for slot in range(self.slots):
            self._scale(slot, 0.0)
        self._activate_encoders({})
