"""The torch inversion and the Inverted Batch Unsampler node against `jax_unsampler.inverted_latents`.

Both sides get the same analytic denoiser (written twice, in torch and in JAX, here). With
`COMFYUI_PATH`, the node runs a real ModelPatcher around a test-only BaseModel whose network
returns that denoiser's prediction, through ComfyUI's own guider, and must give what the JAX
function gives with the JAX denoiser in the model's latent format.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from comfy_models import MU_NEG, MU_POS, NEG, POS, gaussian_denoised
from comfy_models import tiny_base_model as _tiny_base_model
from conftest import needs_comfyui, run_node

import jax_unsampler as ju
import torch_bridge as tb
from torch_bridge import _inversion_node


def wavy_torch(x, sigma):
    sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return torch.tanh(x) / (1 + sig**2) + 0.1 * torch.sin(3 * x) * sig / (1 + sig)


def wavy_jax(x, sigma):
    sig = jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1))
    return jnp.tanh(x) / (1 + sig**2) + 0.1 * jnp.sin(3 * x) * sig / (1 + sig)


def _latent(shape=(2, 4, 5, 6), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.3


SIGMAS = [0.03, 0.03, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 14.6]  # with a repeat


def consistent_torch(x, sigma):
    """A non-linear denoiser with D(x, 0) = x, so a step from sigma 0 stays well-conditioned."""
    sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return (x + sig**2 * torch.tanh(x)) / (1 + sig**2) + 0.1 * sig / (1 + sig) * torch.sin(3 * x)


def consistent_jax(x, sigma):
    sig = jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1))
    return (x + sig**2 * jnp.tanh(x)) / (1 + sig**2) + 0.1 * sig / (1 + sig) * jnp.sin(3 * x)


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m"])
@pytest.mark.parametrize("shape", [(2, 4, 5, 6), (1, 16, 2, 3, 3), (3, 7)])
def test_torch_recurrence_equals_the_jax_function(solver, shape):
    x = _latent(shape)
    got = tb.inverted_latents_torch(wavy_torch, x, SIGMAS, sampler=solver)
    want = ju.inverted_latents(wavy_jax, jnp.asarray(x.numpy()), np.float32(SIGMAS), sampler=solver)
    assert got.shape == (len(SIGMAS) * shape[0], *shape[1:]) and got.dtype == torch.float32
    # The same float32 operations in the same order; XLA may turn a division by a scalar into a
    # product with its reciprocal (1 ulp a step), so allow a few ulps over 10 steps.
    np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[: shape[0]].numpy(), x.numpy())


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_torch_sigma_zero_rule_equals_the_jax_function(solver):
    x = _latent((2, 3, 4))
    sigmas = [0.0, 0.0, 0.03, 0.5, 2.0]
    got = tb.inverted_latents_torch(consistent_torch, x, sigmas, sampler=solver)
    want = ju.inverted_latents(consistent_jax, jnp.asarray(x.numpy()), np.float32(sigmas), sampler=solver)
    # The step from 0 divides x - D(x, 1e-4) by 1e-4: one ulp of x (1.2e-7 |x|, |x| < 3) that
    # torch and XLA round differently becomes 3.6e-3 of slope, 1.1e-4 over the step of 0.03.
    np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=0, atol=3e-4)
    assert np.isfinite(got.numpy()).all()


def test_torch_model_space_equals_the_jax_latent_format():
    fmt = ju.LatentFormat("test", scale_factor=0.5, shift_factor=0.2)
    x = _latent((1, 3, 4))
    got = tb.inverted_latents_torch(
        wavy_torch, x, SIGMAS, sampler="heun",
        process_in=lambda v: (v - 0.2) * 0.5, process_out=lambda v: v / 0.5 + 0.2,
    )  # fmt: skip
    want = ju.inverted_latents(
        wavy_jax, jnp.asarray(x.numpy()), np.float32(SIGMAS), sampler="heun", latent_format=fmt
    )
    np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_torch_half_precision_latent():
    x = _latent((1, 2, 3)).to(torch.bfloat16)
    got = tb.inverted_latents_torch(wavy_torch, x, SIGMAS[:5])
    assert got.dtype == torch.bfloat16
    want = tb.inverted_latents_torch(wavy_torch, x.float(), SIGMAS[:5]).to(torch.bfloat16)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_progress_callback():
    steps = []
    tb.inverted_latents_torch(
        wavy_torch, _latent((1, 2)), [0.1, 0.2, 0.4], on_step=lambda i, n: steps.append((i, n))
    )
    assert steps == [(1, 2), (2, 2)]


class TestTorchBadInput:
    def test_descending(self):
        with pytest.raises(ValueError, match=r"inverted_latents_torch: sigmas must be ascending .* index 1"):
            tb.inverted_latents_torch(wavy_torch, _latent(), [2.0, 1.0])

    def test_wrong_output_shape(self):
        with pytest.raises(
            ValueError, match=r"inverted_latents_torch: denoiser must return .* \(2, 4, 5, 6\)"
        ):
            tb.inverted_latents_torch(lambda x, s: x[0], _latent(), [0.5, 1.0])

    def test_unknown_solver(self):
        with pytest.raises(ValueError, match=r"inverted_latents_torch: unknown sampler 'rk4'; valid choices"):
            tb.inverted_latents_torch(wavy_torch, _latent(), [0.5, 1.0], sampler="rk4")


class TestNodeDefinition:
    def test_registered_next_to_the_batch_unsampler(self):
        assert tb.NODE_CLASS_MAPPINGS[tb.INVERSION_NODE_ID] is tb.InvertedBatchUnsamplerJax
        assert tb.INVERSION_NODE_ID.startswith("JaxUnsampler_")
        assert (
            tb.NODE_DISPLAY_NAME_MAPPINGS[tb.INVERSION_NODE_ID] == "Inverted Batch Unsampler (jax-unsampler)"
        )
        assert tb.NODE_CLASS_MAPPINGS[tb.NODE_ID] is tb.BatchUnsamplerJax

    def test_inputs_are_the_batch_unsamplers_plus_conditioning_cfg_solver(self):
        spec = tb.InvertedBatchUnsamplerJax.INPUT_TYPES()
        base = tb.BatchUnsamplerJax.INPUT_TYPES()["required"]
        required = spec["required"]
        assert set(required) == set(base) | {"positive", "negative"}
        assert required["positive"] == ("CONDITIONING",) and required["negative"] == ("CONDITIONING",)
        for name in set(base) - {"steps"}:
            assert required[name] == base[name], name
        assert (
            required["steps"][1]["default"] == 20 and required["steps"][1]["max"] == base["steps"][1]["max"]
        )
        cfg = spec["optional"]["cfg"]
        assert cfg[0] == "FLOAT" and cfg[1]["default"] == 1.0 and "1.0" in cfg[1]["tooltip"]
        assert spec["optional"]["solver"][0] == list(ju.INVERSION_SAMPLERS)

    @pytest.mark.parametrize(
        "inputs, match",
        [
            ({"solver": "rk4"}, r"unknown solver 'rk4'; valid choices: euler, euler_cfg_pp, heun, dpm_2, "),
            ({"cfg": float("nan")}, r"cfg must be a finite number"),
            ({"normalize": "yes"}, r"normalize must be True or False"),
            ({"latent_image": {"x": 1}}, r"samples"),
            # Issue 22: the node's inputs named, not the internal functions that failed.
            (
                {"model": object()},
                r"model: cannot find a model_sampling .*expected a ComfyUI MODEL",
            ),
            ({"sampler_name": "nope"}, r"unknown sampler_name 'nope'; valid choices: .*euler"),
            ({"scheduler": "nope"}, r"unknown scheduler 'nope'; valid choices: .*karras"),
            ({"cfg": -3}, r"cfg must be a finite number from 0 to 100 .*got -3$"),
            ({"cfg": 100.5}, r"cfg must be a finite number from 0 to 100"),
            ({"cfg": True}, r"cfg must be a finite number"),
            # A NumPy float is a number: accepted, so the next check (the missing model) speaks.
            ({"cfg": np.float32(1.0)}, r"model: got None; expected a ComfyUI MODEL"),
            ({"cfg": np.float64(2.0)}, r"model: got None; expected a ComfyUI MODEL"),
            ({"latent_image": {"samples": torch.full((1, 4, 2, 2), float("nan"))}}, r"latent_image: .*NaN"),
            (
                {"latent_image": {"samples": torch.full((1, 4, 2, 2), float("inf"))}},
                r"latent_image: .*infinite",
            ),
        ],
    )
    def test_bad_input_is_one_line_naming_the_node(self, inputs, match):
        args = dict(
            model=None, positive=[], negative=[], sampler_name="euler", scheduler="simple", steps=4,
            start_at_step=0, end_at_step=10000, latent_image={"samples": torch.zeros(1, 4, 2, 2)},
        )  # fmt: skip
        with pytest.raises(ValueError, match=rf"^JaxUnsampler_InvertedBatchUnsampler: .*{match}") as err:
            _inversion_node.inverted_batch_unsample_comfy(**{**args, **inputs})
        assert "\n" not in str(err.value)
        for internal in (
            "model_sampling_from_comfy",
            "ksampler_sigmas",
            "calculate_sigmas",
            "unsampler_sigmas",
        ):
            assert internal not in str(err.value)


# ---- With ComfyUI: a real ModelPatcher around a test-only model --------------------------------


@needs_comfyui
@pytest.mark.parametrize("family", ["sd15", "sd3"])
@pytest.mark.parametrize("solver, cfg", [("euler", 1.0), ("heun", 1.0), ("euler", 2.5)])
def test_node_on_a_real_model_patcher_equals_the_jax_path(comfy, family, solver, cfg):
    patcher = _tiny_base_model(comfy, family)
    latent = {"samples": _latent((2, 4, 3, 5), seed=4)}
    steps, start, end = 6, 1, 6
    (out,) = run_node(
        tb.InvertedBatchUnsamplerJax, patcher, POS, NEG, "euler", "karras",
        steps, start, end, latent, False, cfg, solver,
    )  # fmt: skip
    z = out["samples"]

    ms = tb.model_sampling_from_comfy(patcher)
    sigmas = ju.unsampler_sigmas(ms, "euler", "karras", steps, start, end)
    fmt = tb.latent_format_from_comfy(patcher)

    def guided(x, sigma):  # ComfyUI's cfg: uncond + (cond - uncond) * cfg
        pos, neg = gaussian_denoised(x, sigma, MU_POS), gaussian_denoised(x, sigma, MU_NEG)
        return pos if cfg == 1.0 else neg + (pos - neg) * cfg

    want = ju.inverted_latents(
        guided, jnp.asarray(latent["samples"].numpy()), sigmas, sampler=solver, latent_format=fmt
    )
    assert z.shape == (5 * 2, 4, 3, 5)
    # ComfyUI rounds differently on the way (input scaling, latent format maps): 1e-5 of the
    # trajectory's scale, over 4 steps; 1% off in sigma, or the wrong conditioning, is off by > 1e-3.
    scale = float(np.abs(np.asarray(want)).max())
    np.testing.assert_allclose(z.numpy(), np.asarray(want), rtol=1e-5, atol=2e-5 * scale)
    np.testing.assert_array_equal(z[:2].numpy(), latent["samples"].numpy())


@needs_comfyui
def test_node_round_trip_with_comfyuis_own_heun_sampler(comfy):
    """Sampling the top entry back down with ComfyUI's heun sampler returns to the latent."""
    import comfy.samplers

    patcher = _tiny_base_model(comfy, "sd15")
    x = _latent((1, 4, 3, 3), seed=5)
    steps = 40
    (out,) = run_node(
        tb.InvertedBatchUnsamplerJax, patcher, POS, NEG, "euler", "karras",
        steps, 0, steps, {"samples": x}, False, 1.0, "heun",
    )  # fmt: skip
    sigmas = torch.tensor(
        np.asarray(ju.unsampler_sigmas(tb.model_sampling_from_comfy(patcher), "euler", "karras", steps))
    )
    top = out["samples"][-1:]
    # Zero noise: ComfyUI's sampler starts from `top` as given, and it stops at the smallest
    # sigma, where the trajectory started from the latent.
    back = comfy.samplers.sample(
        patcher, torch.zeros_like(top), POS, NEG, 1.0, "cpu",
        comfy.samplers.sampler_object("heun"), sigmas.flip(0).contiguous(), latent_image=top,
    )  # fmt: skip
    # Both directions are second order over 40 karras steps: ~1e-3 of the latent's scale;
    # with no inversion (top = the latent plus noise) it would be off by order 1.
    assert torch.allclose(back, x, atol=5e-3), (back - x).abs().max()


@needs_comfyui
def test_node_without_steps_loads_no_model(comfy):
    patcher = _tiny_base_model(comfy, "sd15")
    latent = {"samples": _latent((1, 4, 2, 2)), "noise_mask": torch.ones(1, 2, 2)}
    (one,) = run_node(tb.InvertedBatchUnsamplerJax, patcher, [], [], "euler", "simple", 5, 4, 5, latent)
    torch.testing.assert_close(one["samples"], latent["samples"])
    # A window of no steps is refused, as by the Batch Unsampler (an empty LATENT breaks the nodes after it).
    with pytest.raises(
        ValueError, match=r"^JaxUnsampler_InvertedBatchUnsampler: start_at_step \(5\) must be below"
    ):
        run_node(tb.InvertedBatchUnsamplerJax, patcher, [], [], "euler", "simple", 5, 5, 5, latent)


@needs_comfyui
def test_node_normalize_and_latent_keys(comfy):
    """normalize: the BatchUnsampler's rule, one scalar (the mean of the first entry) subtracted
    from every entry; other LATENT keys carried, noise_mask expanded with the batch."""
    patcher = _tiny_base_model(comfy, "sd15")
    latent = {"samples": _latent((2, 4, 2, 3), seed=6) + 1.0, "noise_mask": torch.rand(2, 2, 3), "type": "x"}
    args = (tb.InvertedBatchUnsamplerJax, patcher, POS, NEG, "euler", "karras", 5, 1, 5, latent)
    (plain,) = run_node(*args, False)
    (normed,) = run_node(*args, True)
    shift = plain["samples"][0].mean()
    assert abs(float(shift)) > 0.5
    torch.testing.assert_close(normed["samples"], plain["samples"] - shift)
    assert normed["type"] == "x" and normed["noise_mask"].shape == (4 * 2, 2, 3)


def test_node_refuses_a_start_past_a_shortened_schedule():
    # sd15's beta schedule for 300 steps has 293 sigmas (repeated table indices are dropped), so
    # a window starting at 295 passes the step-range check yet selects no sigma: refused, no
    # model call (the test double has none to make).
    import torch_bridge_doubles as doubles

    latent = {"samples": torch.zeros(1, 4, 2, 2)}
    with pytest.raises(ValueError, match=r"start_at_step \(295\) is past the end of the beta schedule"):
        run_node(
            tb.InvertedBatchUnsamplerJax,
            doubles.patcher("sd15"),
            [],
            [],
            "euler",
            "beta",
            300,
            295,
            300,
            latent,
        )


@needs_comfyui
def test_node_refuses_nan_before_the_model_runs_and_takes_numpy_cfg(comfy):
    """Issue 22: a NaN latent is refused before any model call; cfg=np.float32(1.0) is cfg 1."""
    patcher = _tiny_base_model(comfy, "sd15")
    calls = []
    net = patcher.model.diffusion_model
    net.register_forward_pre_hook(lambda module, args: calls.append(1))
    bad = {"samples": torch.full((1, 4, 2, 2), float("nan"))}
    with pytest.raises(ValueError, match=r"^JaxUnsampler_InvertedBatchUnsampler: latent_image: .*NaN"):
        run_node(tb.InvertedBatchUnsamplerJax, patcher, POS, NEG, "euler", "karras", 4, 0, 4, bad)
    assert calls == []
    latent = {"samples": _latent((1, 4, 2, 2), seed=7)}
    args = (patcher, POS, NEG, "euler", "karras", 4, 0, 4, latent, False)
    (numpy_cfg,) = run_node(tb.InvertedBatchUnsamplerJax, *args, np.float32(1.0))
    assert calls  # the model ran
    (plain,) = run_node(tb.InvertedBatchUnsamplerJax, *args, 1.0)
    torch.testing.assert_close(numpy_cfg["samples"], plain["samples"], rtol=0, atol=0)
