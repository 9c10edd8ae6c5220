"""Schedulers a request may name, built fresh per job from the loaded pipeline's scheduler config."""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)

from worker.failures import InvalidInput

# name -> (class, config overrides). Noise-prediction (UNet) models take the first group,
# flow-matching (SD3, FLUX) models the second.
NOISE_SCHEDULERS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": (DDIMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),  # latent-consistency distilled models (LCM, LCM-LoRA): 1-8 steps
}
FLOW_SCHEDULERS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "flow_euler": (FlowMatchEulerDiscreteScheduler, {}),
}


class UnknownScheduler(InvalidInput):
    """A scheduler name this model cannot use."""


def family(scheduler: Any) -> dict[str, tuple[type[Any], dict[str, Any]]]:
    """The schedulers valid for a pipeline whose scheduler is `scheduler`."""
    return FLOW_SCHEDULERS if "FlowMatch" in type(scheduler).__name__ else NOISE_SCHEDULERS


def name_of(scheduler: Any) -> str:
    """Our name for a scheduler (the pipeline's own one is the default when a request names none)."""
    # The most specific name first: a Karras DPM-Solver++ also matches plain dpmpp_2m's overrides.
    for name, (cls, overrides) in sorted(family(scheduler).items(), key=lambda item: -len(item[1][1])):
        if type(scheduler) is cls and all(scheduler.config.get(k) == v for k, v in overrides.items()):
            return name
    return type(scheduler).__name__


def build(default: Any, name: str | None) -> Any:
    """A new scheduler: `name` (or the pipeline's own class) over the pipeline's scheduler config."""
    if name is None or name == name_of(default):
        return type(default).from_config(default.config)
    choices = family(default)
    if name not in choices:
        raise UnknownScheduler(f"scheduler {name!r} does not fit this model; valid: {', '.join(choices)}")
    cls, overrides = choices[name]
    return cls.from_config(default.config, **overrides)
