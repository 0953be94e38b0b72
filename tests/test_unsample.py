"""The whole node: batch_unsample, and the golden outputs of the original node and of ComfyUI."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_npz

import jax_unsampler as ju
from jax_unsampler._unsample import mode_noise_options

KEY = jax.random.key(0)
NODE_INDEX, NODE = golden_npz("node_outputs.npz")
MODEL_INDEX, MODEL = golden_npz("model_mode.npz")


def _torch_noise(seed, count, item_shape):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, *item_shape), generator=generator).numpy()


@pytest.mark.parametrize("i", range(len(NODE_INDEX)))
def test_original_node_outputs_from_its_torch_noise(i):
    """Our sigmas plus the node's own torch noise reproduce what the original node returned."""
    case = NODE_INDEX[i]
    p = ju.preset(case["family"])
    x = NODE[f"x{i}"]
    sigmas = ju.unsampler_sigmas(
        p.model_sampling, case["sampler"], case["scheduler"], case["steps"],
        case["start_at_step"], case["end_at_step"], latent_scale_factor=p.latent_scale_factor,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(sigmas), NODE[f"sigmas{i}"], rtol=1e-5)
    noise = _torch_noise(case["seed"], sigmas.shape[0] * x.shape[0], x.shape[1:])
    z = np.asarray(ju.noised_latents_from_noise(x, sigmas, noise, normalize=case["normalize"]))
    if "error" in case:
        # The original raised on this 5-D latent; the intended layout is z[i*B + b].
        chex.assert_shape(z, (sigmas.shape[0] * x.shape[0], *x.shape[1:]))
        b = x.shape[0]
        ref = x[None] + np.asarray(sigmas).reshape(-1, 1, *[1] * (x.ndim - 1)) * noise.reshape(-1, *x.shape)
        np.testing.assert_allclose(z, ref.reshape(z.shape), rtol=1e-6, atol=1e-6 * np.abs(ref).max())
        assert b == 1
        return
    ref = NODE[f"z{i}"]
    assert np.max(np.abs(z - ref)) <= 1e-6 * np.max(np.abs(ref))


@pytest.mark.parametrize("i", range(len(MODEL_INDEX)))
def test_model_mode_matches_comfyui(i):
    """mode="model" is what ComfyUI feeds the model: noise_scaling in the latent format's space."""
    case = MODEL_INDEX[i]
    p = ju.preset(case["family"])
    assert p.model_type == case["model_type"]
    x = MODEL[f"x{i}"]
    sigmas = ju.unsampler_sigmas(p.model_sampling, case["sampler"], case["scheduler"], case["steps"])
    np.testing.assert_allclose(np.asarray(sigmas), MODEL[f"sigmas{i}"], rtol=1e-5, atol=1e-6)
    noise = _torch_noise(case["seed"], sigmas.shape[0] * x.shape[0], x.shape[1:])
    options = mode_noise_options(p.model_sampling, p.latent_format, "model")
    z = np.asarray(ju.noised_latents_from_noise(x, sigmas, noise, **options))
    ref = MODEL[f"z{i}"]
    assert np.max(np.abs(z - ref)) <= 1e-6 * np.max(np.abs(ref))


def test_model_mode_differs_from_node_mode_for_flow_models():
    x = jax.random.normal(jax.random.key(1), (1, 16, 4, 4))
    node = ju.batch_unsample(KEY, "sd3", "euler", "simple", 5, 0, 10000, latent=x)
    model = ju.batch_unsample(KEY, "sd3", "euler", "simple", 5, 0, 10000, latent=x, mode="model")
    assert not np.allclose(np.asarray(node), np.asarray(model))


def test_batch_unsample_is_the_node():
    x = jax.random.normal(jax.random.key(1), (2, 4, 8, 8))
    z = ju.batch_unsample(KEY, "sd15", "dpm_2", "beta", 12, 2, 9, latent=x, normalize=True)
    p = ju.preset("sd15")
    s = ju.unsampler_sigmas(p.model_sampling, "dpm_2", "beta", 12, 2, 9, latent_scale_factor=0.18215)
    np.testing.assert_array_equal(np.asarray(z), np.asarray(ju.noised_latents(KEY, x, s, normalize=True)))
    chex.assert_shape(z, (7 * 2, 4, 8, 8))


def test_model_argument_forms_agree():
    x = jnp.zeros((1, 4, 4, 4))
    p = ju.preset("sdxl")
    by_name = ju.batch_unsample(KEY, "sdxl", "euler", "karras", 6, latent=x)
    by_preset = ju.batch_unsample(KEY, p, "euler", "karras", 6, latent=x)
    by_pair = ju.batch_unsample(
        KEY, (p.model_sampling, p.latent_scale_factor), "euler", "karras", 6, latent=x
    )
    by_format = ju.batch_unsample(KEY, (p.model_sampling, p.latent_format), "euler", "karras", 6, latent=x)
    for other in (by_preset, by_pair, by_format):
        np.testing.assert_array_equal(np.asarray(other), np.asarray(by_name))
    undivided = ju.batch_unsample(KEY, p.model_sampling, "euler", "karras", 6, latent=x)
    same = ju.batch_unsample(KEY, "sdxl", "euler", "karras", 6, latent=x, divide_by_scale_factor=False)
    np.testing.assert_array_equal(np.asarray(undivided), np.asarray(same))


def test_video_and_audio_latents():
    video = ju.batch_unsample(KEY, "wan21", "euler", "simple", 4, latent=jnp.zeros((2, 16, 3, 4, 4)))
    audio = ju.batch_unsample(KEY, "stable-audio", "euler", "karras", 4, latent=jnp.zeros((1, 64, 32)))
    chex.assert_shape(video, (8, 16, 3, 4, 4))
    chex.assert_shape(audio, (4, 64, 32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(model="sd-15"), r"unknown preset 'sd-15' \(did you mean 'sd15'\?\)"),
        (dict(model=42), r"model must be a preset name"),
        (dict(sampler_name="Euler"), r"unknown sampler 'Euler'"),
        (dict(scheduler="linear"), r"unknown scheduler 'linear'.*simple, sgm_uniform"),
        (dict(steps=-1), r"steps must be an integer in \[0, 10000\], got -1"),
        (dict(mode="flow"), r"unknown mode 'flow'.*node, model"),
        (dict(latent=None), r"latent is required"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(
        model="sd15", sampler_name="euler", scheduler="karras", steps=5, start_at_step=0,
        end_at_step=10000, latent=jnp.zeros((1, 4, 2, 2)),
    )  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ju.batch_unsample(KEY, **args)
