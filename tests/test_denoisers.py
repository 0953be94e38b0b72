"""denoiser_from_model against ComfyUI's calculate_input / calculate_denoised / timestep."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_comfyui
from mixing_toys import recorded

import jax_unsampler as ju

MODEL_CASES = recorded("model")


def _denoise(model_type, settings, sigma, x, output, jit=False):
    seen = {}

    def apply_fn(model_input, timestep):
        seen["input"], seen["timestep"] = model_input, timestep
        return jnp.asarray(output)

    den = ju.denoiser_from_model(apply_fn, ju.model_sampling(model_type, settings))
    if jit:  # the denoiser is a pytree: it crosses jit as an argument
        denoised = jax.jit(lambda d, x, s: d(x, s))(den, jnp.asarray(x), jnp.asarray(sigma))
    else:
        denoised = den(jnp.asarray(x), jnp.asarray(sigma))
    if jit:  # the traced inputs are not values; run the prediction once more outside jit
        den(jnp.asarray(x), jnp.asarray(sigma))
    return seen["input"], seen["timestep"], denoised


def test_every_model_type_recorded():
    assert sorted({r["model_type"] for r, _ in MODEL_CASES}) == sorted(ju.MODEL_TYPES)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "case", MODEL_CASES, ids=[f"{r['model_type']}-{r['settings']}" for r, _ in MODEL_CASES]
)
def test_matches_comfyui_recorded(case, jit):
    r, a = case
    settings = dict(r["settings"])  # as ComfyUI was given them (sigma_data too, where it ignores it)
    model_input, timestep, denoised = _denoise(
        r["model_type"], settings, a["sigma"], a["x"], a["output"], jit
    )
    np.testing.assert_allclose(model_input, a["input"], rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(timestep, a["timestep"], rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(denoised, a["denoised"], rtol=2e-6, atol=2e-6)


def test_scalar_sigma_broadcasts_and_extra_arguments_pass_through():
    def apply_fn(x, t, scale, *, shift):
        return x * scale + shift

    den = ju.denoiser_from_model(apply_fn, ju.model_sampling("EPS"))
    x = jnp.ones((2, 3, 4))
    out = den(x, 1.0, 2.0, shift=0.5)
    expected = x - (x / jnp.sqrt(2.0) * 2.0 + 0.5) * 1.0
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert den.noise_scaling == "eps"
    assert ju.denoiser_from_model(apply_fn, ju.model_sampling("FLUX")).noise_scaling == "const"


def test_bad_inputs():
    with pytest.raises(TypeError, match="denoiser_from_model: apply_fn must be callable"):
        ju.denoiser_from_model(3, ju.model_sampling("EPS"))
    with pytest.raises(TypeError, match="denoiser_from_model: model_sampling must be"):
        ju.denoiser_from_model(lambda x, t: x, "EPS")
    den = ju.denoiser_from_model(lambda x, t: x[:, :1], ju.model_sampling("EPS"))
    with pytest.raises(ValueError, match=r"apply_fn returned shape \(2, 1, 4\)"):
        den(jnp.ones((2, 3, 4)), jnp.ones(2))


@needs_comfyui
@pytest.mark.parametrize("model_type", ju.MODEL_TYPES)
def test_matches_comfyui_live(comfy, model_type):
    import comfy.model_base
    import torch

    settings = {"shift": 3.0} if model_type in ("FLOW", "FLUX") else {}
    cfg = types.SimpleNamespace(sampling_settings=settings)
    ms = comfy.model_base.model_sampling(cfg, comfy.model_base.ModelType[model_type])
    rng = np.random.default_rng(7)
    sigma = np.array([float(ms.sigma_max), float(ms.sigma_min) * 2, 0.7], np.float32)
    x = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    out = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    st, xt, ot = (torch.from_numpy(v) for v in (sigma, x, out))
    model_input, timestep, denoised = _denoise(model_type, settings, sigma, x, out)
    np.testing.assert_allclose(model_input, ms.calculate_input(st, xt).numpy(), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(timestep, ms.timestep(st).float().numpy(), rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(denoised, ms.calculate_denoised(st, ot, xt).numpy(), rtol=2e-6, atol=2e-6)
