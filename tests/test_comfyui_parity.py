"""jax_unsampler against ComfyUI itself, beyond the golden families: set COMFYUI_PATH to run.

Builds ComfyUI's own model sampling (`comfy.model_base.model_sampling`) for settings the golden
data does not cover (zero terminal SNR, cosine betas, other timestep counts, shifts below and
above 1, ...) and compares `comfy.samplers.calculate_sigmas` with ours for every scheduler at
step counts up to the node's 10000, with the golden bar.
"""

from __future__ import annotations

import json
import pathlib
import types

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import assert_sigmas_close, golden_sigmas, needs_comfyui

import jax_unsampler as ju

FAMILIES = golden_sigmas()["families"]
ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = needs_comfyui

CONFIGS = [
    ("EPS", {"zsnr": True}),
    ("V_PREDICTION", {"zsnr": True}),
    ("EPS", {"beta_schedule": "cosine"}),
    ("EPS", {"beta_schedule": "sqrt", "linear_start": 0.0001, "linear_end": 0.02}),
    ("EPS", {"timesteps": 1100, "linear_end": 0.014}),
    ("IMG_TO_IMG", {}),
    ("V_PREDICTION_EDM", {"sigma_max": 500.0, "sigma_min": 0.01}),
    ("EDM", {}),
    ("V_PREDICTION_CONTINUOUS", {}),
    ("FLOW", {"shift": 6.0, "multiplier": 1.0}),
    ("FLOW", {"shift": 0.5}),
    ("FLOW", {}),
    ("FLUX", {"shift": 0.5}),
    ("FLUX", {"shift": 3.0}),
    ("STABLE_CASCADE", {}),
    ("STABLE_CASCADE", {"shift": 4.0}),
    ("FLOW_COSMOS", {"sigma_max": 200.0, "sigma_min": 0.01}),
]
# The golden families too, at step counts the golden data does not reach.
CONFIGS += sorted(
    {(r["model_type"], json.dumps(r["sampling_settings"], sort_keys=True)) for r in FAMILIES.values()}
)
CONFIGS = [(t, json.loads(s) if isinstance(s, str) else s) for t, s in CONFIGS]
STEPS = (1, 2, 7, 33, 1000, 10000)


def _comfy_sampling(comfy_modules, model_type, settings):
    import comfy.model_base

    config = types.SimpleNamespace(sampling_settings=settings)
    return comfy.model_base.model_sampling(config, comfy.model_base.ModelType[model_type])


@pytest.mark.parametrize(("model_type", "settings"), CONFIGS, ids=[f"{t}-{s}" for t, s in CONFIGS])
def test_tables_and_schedules_match_comfyui(comfy, model_type, settings):  # noqa: F811
    theirs = _comfy_sampling(comfy, model_type, settings)
    ours = ju.model_sampling(model_type, settings)
    table = theirs.sigmas.double().numpy()
    sigma_max = float(table[-1])
    assert_sigmas_close(ours.sigmas, table, sigma_max, f"{model_type} {settings} table")
    for scheduler in ju.SCHEDULERS:
        for steps in STEPS:
            expected = comfy.samplers.calculate_sigmas(theirs, scheduler, steps).double().numpy()
            got = ju.calculate_sigmas(ours, scheduler, steps)
            if scheduler == "kl_optimal" and steps == 1:  # ComfyUI: [nan, 0]; ours: [sigma_max, 0]
                assert np.isnan(expected[0])
                continue
            assert_sigmas_close(got, expected, sigma_max, f"{model_type} {settings} {scheduler} {steps}")


@pytest.mark.parametrize("name", ju.presets())
def test_presets_match_comfyuis_model_configs(comfy, name):  # noqa: F811
    """Every preset: ComfyUI's table for its supported-model config, and its latent format."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models

    p = ju.preset(name)
    record = json.loads((ROOT / "jax_unsampler" / "data" / "presets.json").read_text())["presets"][name]
    config_name = record["comfyui_config"].split()[0]
    config = getattr(comfy.supported_models, config_name)
    assert config.sampling_settings == p.sampling_settings or name == "playground-2.5"
    theirs = _comfy_sampling(comfy, p.model_type, p.sampling_settings)
    table = theirs.sigmas.double().numpy()
    assert_sigmas_close(p.model_sampling.sigmas, table, float(table[-1]), name)
    fmt = getattr(comfy.latent_formats, p.latent_format.name)()
    assert p.latent_format.scale_factor == fmt.scale_factor
    assert p.latent_format.shift_factor == float(getattr(fmt, "shift_factor", 0.0) or 0.0)
    assert (p.latent_channels, p.latent_dimensions) == (fmt.latent_channels, fmt.latent_dimensions)
    x = torch.randn((2, p.latent_channels) + (3,) * p.latent_dimensions)
    np.testing.assert_allclose(
        np.asarray(p.latent_format.process_in(jnp.asarray(x.numpy()))),
        fmt.process_in(x).numpy(),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("name", ju.presets())
def test_model_mode_is_what_comfyui_feeds_the_model(comfy, name):  # noqa: F811
    """mode="model" for every preset: ComfyUI's noise_scaling between process_in and process_out."""
    import comfy.latent_formats

    from jax_unsampler._unsample import mode_noise_options

    p = ju.preset(name)
    theirs = _comfy_sampling(comfy, p.model_type, p.sampling_settings)
    fmt = getattr(comfy.latent_formats, p.latent_format.name)()
    x = torch.randn(
        (2, p.latent_channels) + (3,) * p.latent_dimensions, generator=torch.Generator().manual_seed(1)
    )
    sigmas = ju.unsampler_sigmas(p.model_sampling, "euler", "karras", 5)
    noise = torch.randn((5 * 2, *x.shape[1:]), generator=torch.Generator().manual_seed(2))
    s = torch.tensor(np.asarray(sigmas)).repeat_interleave(2).view(-1, *[1] * (x.ndim - 1))
    expected = fmt.process_out(
        theirs.noise_scaling(s, noise, fmt.process_in(x.repeat(5, *[1] * (x.ndim - 1))))
    )
    options = mode_noise_options(p.model_sampling, p.latent_format, "model")
    got = np.asarray(ju.noised_latents_from_noise(x.numpy(), sigmas, noise.numpy(), **options))
    assert np.max(np.abs(got - expected.numpy())) <= 1e-6 * np.max(np.abs(expected.numpy()))
