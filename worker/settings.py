"""Worker process settings (environment variables `DIFFUSION_*`, see the README)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from contract.settings import CommonSettings

# The embedded default model, shipped inside this package: works from any install, no download.
DEFAULT_MODEL_SOURCE = str(Path(__file__).resolve().parent / "models" / "shapes")


class WorkerSettings(CommonSettings):
    """Everything a worker reads from the environment, with units in the names."""

    model_source: str = Field(default=DEFAULT_MODEL_SOURCE, description="Local diffusers folder or hub id.")
    model_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Queue/model name; default: DIFFUSION_DEFAULT_MODEL.",
    )
    allow_download: bool = False
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    compile: bool = False
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        default="auto",
        description="torch.compile mode; auto: reduce-overhead (CUDA graphs) on CUDA, default elsewhere.",
    )
    warmup_sizes: list[str] = Field(default_factory=list, description="WxH sizes to warm (compile buckets).")
    warmup_steps: int = Field(default=2, ge=1)
    cpu_threads: int = Field(default=0, ge=0, description="torch intra-op threads on CPU; 0 = torch's default.")
    batch_images: bool = Field(default=True, description="Denoise the images of one request as one batch.")
    max_batch_images: int = Field(
        default=8,
        ge=1,
        description="Images one denoising batch may hold, counting compatible jobs claimed together from the queue; "
        "1 turns cross-request batching off.",
    )
    decode_slice_pixels: int = Field(
        default=4 * 1024 * 1024,
        ge=1,
        description="Past this many pixels in a batch (images x width x height) the VAE decodes one image at a time.",
    )
    controlnets: dict[str, str] = Field(
        default_factory=dict, description="ControlNets of this model: name -> local folder or hub id (JSON)."
    )
    lora_dir: Path | None = Field(default=None, description="Directory of LoRA adapters (*.safetensors).")
    max_loaded_loras: int = Field(default=8, ge=1, description="LRU bound of adapters kept loaded.")
    lora_slots: int = Field(
        default=2,
        ge=1,
        description="With compile: adapters one job may combine (hot-swap "
        "slots built into the compiled denoiser; each costs a little per step).",
    )
    png_compress_level: int = Field(default=4, ge=0, le=9)
    png_metadata: bool = Field(default=True, description="Write the generation's parameters into PNG text chunks.")

    default_steps: int = Field(default=25, ge=1)
    default_guidance_scale: float = Field(default=7.5, ge=0)
    # This model's own limits (few-step distilled models: e.g. 4 steps, guidance fixed at 0),
    # published to the API, which refuses requests outside them.
    default_scheduler: str | None = Field(default=None, description="Scheduler name replacing the model's own.")
    max_steps: int | None = Field(default=None, ge=1)
    fixed_guidance_scale: float | None = Field(default=None, ge=0)

    metrics_port: int = Field(default=9101, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # A running job's started-registry entry lives this long after its last heartbeat (a thread sends
    # one every quarter of it while the process runs the job); a killed worker's job is re-queued by the
    # next maintenance of any worker, every `maintenance_interval_seconds`. Defaults: back on another
    # worker within about 13 s of the kill.
    heartbeat_ttl_seconds: int = Field(default=10, ge=2)
    maintenance_interval_seconds: int = Field(default=3, ge=1)
    worker_ttl_seconds: int = Field(default=60, ge=16)

    @field_validator("warmup_sizes")
    @classmethod
    def _sizes(cls, sizes: list[str]) -> list[str]:
        for size in sizes:
            w, _, h = size.partition("x")
            if not (w.isdigit() and h.isdigit() and int(w) % 8 == 0 and int(h) % 8 == 0):
                raise ValueError(f"warmup size {size!r} is not WxH in multiples of 8")
        return sizes

    @property
    def name(self) -> str:
        """The model name this worker serves (and so its queue)."""
        return self.model_name or self.default_model

    @property
    def local_model(self) -> Path | None:
        """The model folder when `model_source` is a local path."""
        path = Path(self.model_source)
        return path if path.exists() else None
