"""Every sampler of `ju.sample` against ComfyUI's own function of that name, run live from
COMFYUI_PATH (tests/sampler_parity.py: the same closed-form denoiser, noise and sigmas on both
sides; an EPS and a flow model; batch 2; float32), and the torch twin against it too."""

from __future__ import annotations

import pytest
from conftest import needs_comfyui
from sampler_parity import MODELS, assert_close, comfyui_sample, jax_sample, torch_sample

from jax_unsampler._names import SAMPLE_SAMPLERS
from jax_unsampler._steps import SAMPLER_STEPS

pytestmark = needs_comfyui

IMPLEMENTED = [name for name in SAMPLE_SAMPLERS if name in SAMPLER_STEPS]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("name", IMPLEMENTED)
def test_sample_equals_comfyuis_function(comfy, name, model):
    expected = comfyui_sample(comfy, name, model)
    assert_close(jax_sample(comfy, name, model), expected, f"{name} on {model}")


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("name", IMPLEMENTED)
def test_sample_torch_equals_comfyuis_function(comfy, name, model):
    expected = comfyui_sample(comfy, name, model)
    assert_close(torch_sample(comfy, name, model), expected, f"{name} (torch) on {model}")
