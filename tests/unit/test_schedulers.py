"""Scheduler names map to diffusers classes per model family, built fresh from the model's config."""

from __future__ import annotations

import pytest
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
)

from worker import schedulers
from worker.failures import InvalidInput

SD = EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1)
FLOW = FlowMatchEulerDiscreteScheduler(shift=3.0)


def test_names_of_the_models_own_schedulers() -> None:
    assert schedulers.name_of(SD) == "euler"
    assert schedulers.name_of(FLOW) == "flow_euler"
    assert schedulers.name_of(PNDMScheduler()) == "PNDMScheduler", "unknown classes keep their class name"
    karras = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    assert schedulers.name_of(karras) == "dpmpp_2m_karras"


def test_build_keeps_the_models_config_and_applies_overrides() -> None:
    built = schedulers.build(SD, "dpmpp_2m_karras")
    assert isinstance(built, DPMSolverMultistepScheduler) and built.config.use_karras_sigmas
    assert built.config.beta_schedule == "scaled_linear" and built.config.steps_offset == 1
    assert isinstance(schedulers.build(SD, "ddim"), DDIMScheduler)
    fresh = schedulers.build(SD, None)
    assert type(fresh) is EulerDiscreteScheduler and fresh is not SD


def test_families_do_not_mix() -> None:
    assert "flow_euler" not in schedulers.family(SD) and list(schedulers.family(FLOW)) == ["flow_euler"]
    with pytest.raises(InvalidInput, match="valid: flow_euler"):
        schedulers.build(FLOW, "ddim")
