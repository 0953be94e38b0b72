"""The mixing nodes against the original ComfyUI-Iterative-Mixer's own nodes, run live inside
ComfyUI (COMFYUI_PATH) from its reference tree (`../shared/reference/ComfyUI-Iterative-Mixer`
or ITERATIVE_MIXER_PATH), on a ComfyUI BaseModel whose network is the exact denoiser of
Gaussian data (tests/comfy_models.py): conditioning and cfg matter, and ComfyUI's KSampler,
CFG guider and model wrapping run as for any checkpoint.

- Iterative Mixing KSampler Advanced (ours, noise_source="torch") = the original's Iterative
  Mixing KSampler Advanced on the same batch: mixed, noised and intermediate latents.
- Iterative Mixing KSampler (ours, one node) = our Batch Unsampler's batch fed to the
  original's Advanced node, its last step (what the original's one-node sampler does, on a
  ComfyUI where it still works).
- Iterative Mixing Sampler (ours) in SamplerCustom = the original's IterativeMixingSampler in
  SamplerCustom, with torch's generator seeded as the seed (the original draws from it).
"""

from __future__ import annotations

import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest
import torch
from comfy_models import NEG, POS, tiny_base_model
from conftest import ITERATIVE_MIXER_PATH, needs_comfyui, run_node

import jax_unsampler as ju
import torch_bridge as tb

pytestmark = [
    needs_comfyui,
    pytest.mark.skipif(
        not ITERATIVE_MIXER_PATH.is_dir(), reason="set ITERATIVE_MIXER_PATH to the original's source tree"
    ),
]


@pytest.fixture(scope="module")
def original(comfy, tmp_path_factory):
    """The original pack's `nodes` module, imported from a copy of its reference tree (its
    package `__init__` is not run: it only re-exports the mappings)."""
    pack = tmp_path_factory.mktemp("original") / "iterative_mixer_original"
    if (ITERATIVE_MIXER_PATH / "nodes.py").is_file():  # a source tree (the reference)
        shutil.copytree(ITERATIVE_MIXER_PATH, pack, ignore=shutil.ignore_patterns("examples", "*.md"))
    else:  # a git directory: its HEAD
        pack.mkdir()
        archive = subprocess.run(["git", "--git-dir", str(ITERATIVE_MIXER_PATH), "archive", "HEAD"],
                                 check=True, capture_output=True, timeout=120).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(pack, filter="data")
    sys.path.insert(0, str(pack.parent))
    package = types.ModuleType(pack.name)
    package.__path__ = [str(pack)]
    sys.modules[pack.name] = package
    return importlib.import_module(f"{pack.name}.nodes")


@pytest.fixture(scope="module")
def model(comfy):
    return tiny_base_model(comfy, "sd15")


def _latent(shape=(1, 4, 4, 4), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


def _batch(model, x, steps, seed, sampler="euler", scheduler="karras"):
    args = (model, sampler, scheduler, steps, 0, steps, {"samples": x}, False)
    (batch,) = run_node(tb.BatchUnsamplerJax, *args, seed=seed, noise_source="torch")
    return batch


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    scale = float(want.abs().max())
    # The blend is JAX float32 against the original's torch float32: rounding apart only.
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=2e-5 * scale, err_msg=what)


ADVANCED_CASES = [
    # sampler_name, scheduler, cfg, alpha_1, schedule, function, stop, clamp, denoise
    ("euler", "karras", 1.0, 2.4, "cosine", "addition", 1.0, 1.0, 1.0),
    ("dpmpp_2m", "normal", 3.5, 0.7, "linear", "slerp", 0.8, 1.0, 1.0),
    ("heun", "simple", 2.0, 6.0, "logistic", "norm_only", 1.0, 0.7, 1.0),
    ("euler_ancestral", "karras", 5.0, 2.4, "cosine", "addition", 0.6, 0.9, 0.6),
]


ADVANCED_NAMES = (
    "sampler_name",
    "scheduler",
    "cfg",
    "alpha_1",
    "schedule",
    "function",
    "stop",
    "clamp",
    "denoise",
)


@pytest.mark.parametrize(ADVANCED_NAMES, ADVANCED_CASES)
def test_advanced_equals_the_originals_advanced(
    original, model, sampler_name, scheduler, cfg, alpha_1, schedule, function, stop, clamp, denoise
):
    steps, seed = 7, 1234
    batch = _batch(model, _latent(seed=3), steps, seed=21, sampler=sampler_name, scheduler=scheduler)
    common = (model, seed, cfg, sampler_name, scheduler, POS, NEG, batch)
    settings = dict(
        denoise=denoise, alpha_1=alpha_1, reverse_input_batch=True, blending_schedule=schedule,
        stop_blending_at_pct=stop, clamp_blending_at_pct=clamp, blending_function=function,
    )  # fmt: skip
    want = original.IterativeMixingKSamplerAdv().sample(*common, **settings)
    got = run_node(tb.IterativeMixingKSamplerAdvancedJax, *common, **settings, noise_source="torch")
    assert torch.equal(got[1]["samples"], want[1]["samples"])  # the flipped batch, noisiest first
    _close(got[2]["samples"], want[2]["samples"], "intermediate latents")
    _close(got[0]["samples"], want[0]["samples"], "mixed latents")
    assert got[3].shape[0] == 1 and got[3].shape[-1] == 3  # the schedule plot is an IMAGE


def test_the_mix_is_not_the_plain_sampler(original, model):
    """The blend matters: without it (blend_max 0: all batch) the output is the batch's step."""
    steps = 5
    batch = _batch(model, _latent(seed=4), steps, seed=8)
    common = (model, 9, 1.0, "euler", "karras", POS, NEG, batch)
    (mixed, noised, _, _) = run_node(tb.IterativeMixingKSamplerAdvancedJax, *common, blend_max=0.0)
    torch.testing.assert_close(mixed["samples"][1:], noised["samples"], rtol=0, atol=0)


KSAMPLER_CASES = [("euler", "karras", "addition", False), ("dpmpp_2m", "simple", "slerp", True)]


@pytest.mark.parametrize(("sampler_name", "scheduler", "function", "normalize"), KSAMPLER_CASES)
def test_ksampler_is_the_batch_unsampler_then_the_originals_advanced(
    original, model, sampler_name, scheduler, function, normalize
):
    x, steps, seed, cfg = _latent(seed=5), 6, 77, 2.5
    unsampler = (model, sampler_name, scheduler, steps, 0, steps, {"samples": x}, normalize)
    (batch,) = run_node(tb.BatchUnsamplerJax, *unsampler, seed=seed, noise_source="torch")
    want, _, _, _ = original.IterativeMixingKSamplerAdv().sample(
        model, seed, cfg, sampler_name, scheduler, POS, NEG, batch, denoise=1.0, alpha_1=2.4,
        blending_schedule="cosine", stop_blending_at_pct=1.0, clamp_blending_at_pct=1.0,
        blending_function=function,
    )  # fmt: skip
    settings = (sampler_name, scheduler, 1.0, 2.4, "cosine", function, normalize)
    node = (model, POS, NEG, {"samples": x}, seed, steps, cfg, *settings)
    (got,) = run_node(tb.IterativeMixingKSamplerJax, *node, noise_source="torch")
    _close(got["samples"], want["samples"][-1:], "last mixed latent")


def test_ksampler_takes_a_batch_of_latents(model):
    """B = 2: one batch of 2 per step; each latent's result is its own (the other changed, it
    stays), and jax noise differs from torch noise."""
    x = _latent((2, 4, 4, 4), seed=6)
    args = (
        model,
        POS,
        NEG,
        {"samples": x},
        5,
        4,
        1.5,
        "euler",
        "karras",
        1.0,
        2.4,
        "cosine",
        "addition",
        False,
    )
    (both,) = run_node(tb.IterativeMixingKSamplerJax, *args, noise_source="torch")
    assert both["samples"].shape == (2, 4, 4, 4) and torch.isfinite(both["samples"]).all()
    (jax_noise,) = run_node(tb.IterativeMixingKSamplerJax, *args, noise_source="jax")
    assert jax_noise["samples"].shape == (2, 4, 4, 4) and not torch.equal(
        jax_noise["samples"], both["samples"]
    )


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"cfg": -1.0}, r"cfg must be a finite number from 0 to 100"),
        ({"alpha_1": float("nan")}, r"alpha_1 must be a finite number"),
        ({"stop_blending_at_pct": 1.5}, r"stop_blending_at_pct must be a finite number from 0 to 1"),
        ({"blending_schedule": "cos"}, r"unknown blending_schedule 'cos'"),
        ({"blending_function": "mix"}, r"unknown blending_function 'mix'"),
        ({"sampler_name": "nope"}, r"unknown sampler_name 'nope'"),
        ({"latents_per_step": 2}, r"not a whole number of steps of latents_per_step=2"),
        (
            {"latent_image_batch": {"samples": torch.full((3, 4, 2, 2), float("nan"))}},
            r"latent_image_batch: .*NaN",
        ),
        ({"noise_source": "numpy"}, r"unknown noise_source 'numpy'"),
        ({"seed": -1}, r"seed must be an integer"),
    ],
)
def test_advanced_bad_input_is_one_line_naming_the_node(model, inputs, match):
    args = dict(
        model=model, seed=0, cfg=1.0, sampler_name="euler", scheduler="karras", positive=POS, negative=NEG,
        latent_image_batch={"samples": torch.zeros(3, 4, 2, 2)},
    )  # fmt: skip
    with pytest.raises(ValueError, match=rf"^JaxUnsampler_IterativeMixingKSamplerAdvanced: .*{match}") as err:
        run_node(tb.IterativeMixingKSamplerAdvancedJax, **{**args, **inputs})
    assert "\n" not in str(err.value)


def test_advanced_diverging_model_is_one_line_naming_the_node_and_step(model):
    # The probe's tiny random model diverged at stop_blending_at_pct=0.2 and ended in the
    # internal "blend: x contains NaN"; here a model patched to diverge from its second call on.
    diverging = model.clone()
    calls = []

    def wrapper(apply, args):
        calls.append(1)
        out = apply(args["input"], args["timestep"], **args["c"])
        return out if len(calls) < 2 else out * float("nan")

    diverging.set_model_unet_function_wrapper(wrapper)
    args = dict(
        model=diverging, seed=0, cfg=1.0, sampler_name="euler", scheduler="karras",
        positive=POS, negative=NEG,
        latent_image_batch={"samples": torch.zeros(3, 4, 2, 2)},
    )  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"^JaxUnsampler_IterativeMixingKSamplerAdvanced: the model's output at step 3 of 3 "
        r"\(euler, karras\) holds NaN or infinite values: the model diverged there",
    ) as err:
        run_node(tb.IterativeMixingKSamplerAdvancedJax, **args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"model": object()}, r"model: cannot find a model_sampling"),
        ({"steps": 0}, r"steps must be an integer in \[1, 10000\]"),
        ({"scheduler": "nope"}, r"unknown scheduler 'nope'"),
        ({"latent_image": {"samples": torch.full((1, 4, 2, 2), float("inf"))}}, r"latent_image: .*infinite"),
        ({"clamp_blending_at_pct": -0.1}, r"clamp_blending_at_pct must be a finite number from 0 to 1"),
    ],
)
def test_ksampler_bad_input_is_one_line_naming_the_node(model, inputs, match):
    args = dict(
        model=model, positive=POS, negative=NEG, latent_image={"samples": torch.zeros(1, 4, 2, 2)}, seed=0,
        steps=3, cfg=1.0, sampler_name="euler", scheduler="karras", denoise=1.0, alpha_1=2.4,
        blending_schedule="cosine", blending_function="addition", normalize_on_mean=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=rf"^JaxUnsampler_IterativeMixingKSampler: .*{match}") as err:
        run_node(tb.IterativeMixingKSamplerJax, **{**args, **inputs})
    assert "\n" not in str(err.value)


SAMPLER_CASES = [
    ("euler", "cosine", "addition", False, False),
    ("dpmpp_2m", "linear", "norm_only", True, False),
    ("lcm", "logistic", "addition", False, False),
    ("euler", "cosine", "addition", False, True),
]


@pytest.mark.parametrize(("sampler", "schedule", "function", "normalize", "rewind"), SAMPLER_CASES)
def test_sampler_in_samplercustom_equals_the_originals(
    original, model, sampler, schedule, function, normalize, rewind
):
    import comfy.sample
    import comfy.samplers

    x = _latent(seed=7)
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 9).float()
    settings = dict(
        alpha_1=2.4, blending_schedule=schedule, blending_function=function, normalize_on_mean=normalize,
        start_blending_at_pct=0.0, stop_blending_at_pct=1.0, clamp_blending_at_pct=1.0, blend_min=0.0,
        blend_max=1.0, rewind=rewind, rewind_min=0.3, rewind_max=0.8,
    )  # fmt: skip
    theirs = original.IterativeMixingSamplerNode().get_sampler(
        model, sampler, **settings, perlin_mode="masks", perlin_strength=0.75, perlin_scale=10.0
    )[0]
    (ours,) = run_node(tb.IterativeMixingSamplerJax, sampler, **settings)
    seed, cfg = 99, 2.0
    noise = torch.zeros_like(x)  # SamplerCustom with add_noise off: the sampler starts from x
    torch.manual_seed(seed)  # the original draws its noise from torch's global generator
    want = comfy.sample.sample_custom(model, noise, cfg, theirs, sigmas, POS, NEG, x, seed=seed)
    got = comfy.sample.sample_custom(model, noise, cfg, ours, sigmas, POS, NEG, x, seed=seed)
    _close(got, want, f"{sampler} {schedule} {function}")


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (
            {"sampler": "dpmpp_3m"},
            r"unknown sampler 'dpmpp_3m' .*; valid choices: euler, euler_cfg_pp, euler_ancestral, ",
        ),
        (
            {"rewind": True, "rewind_min": 0.8, "rewind_max": 0.5},
            r"rewind_min \(0.8\) must be below rewind_max",
        ),
        ({"rewind_max": 1.5}, r"rewind_max must be a finite number from 0 to 0.999"),
        ({"blend_min": float("inf")}, r"blend_min must be a finite number"),
        ({"normalize_on_mean": 1}, r"normalize_on_mean must be True or False"),
    ],
)
def test_sampler_bad_input_is_one_line_naming_the_node(inputs, match):
    with pytest.raises(ValueError, match=rf"^JaxUnsampler_IterativeMixingSampler: .*{match}") as err:
        run_node(tb.IterativeMixingSamplerJax, **inputs)
    assert "\n" not in str(err.value)


def test_the_nodes_offer_every_mixing_and_inversion_sampler():
    assert tb.IterativeMixingSamplerJax.INPUT_TYPES()["required"]["sampler"][0] == list(ju.MIXING_SAMPLERS)
    solver = tb.InvertedBatchUnsamplerJax.INPUT_TYPES()["optional"]["solver"][0]
    assert solver == list(ju.INVERSION_SAMPLERS)


@pytest.mark.parametrize("sampler", ["euler", "dpm_2", "deis", "res_multistep", "dpmpp_2m_cfg_pp"])
def test_the_sampler_blending_nothing_in_is_comfyuis_sampler(model, sampler):
    """With the blend weight 1 everywhere (`blend_min = blend_max = 1`) the mix keeps the
    sampler's own state: in SamplerCustom on a real model, at cfg 2, it is ComfyUI's own function
    of that name started where the mixing path starts, the noisiest entry of the noised batch
    (`x + sigmas[0] * eps`, eps the first draws of the seed's generator). The deterministic
    samplers: no later draws to order; the CFG++ one reads the unconditional prediction as
    ComfyUI's does."""
    import comfy.sample
    import comfy.samplers

    x = _latent(seed=5)
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 7).float()
    (ours,) = run_node(tb.IterativeMixingSamplerJax, sampler, blend_min=1.0, blend_max=1.0)
    seed, cfg = 3, 2.0
    function = comfy.samplers.sampler_object(sampler).sampler_function

    def theirs_function(model_k, x, sigmas, **kwargs):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        eps = torch.randn((sigmas.shape[0] * x.shape[0], *x.shape[1:]), generator=generator)
        return function(model_k, x + eps[: x.shape[0]] * sigmas[0], sigmas, **kwargs)

    theirs = comfy.samplers.KSAMPLER(theirs_function)
    noise = torch.zeros_like(x)
    want = comfy.sample.sample_custom(model, noise, cfg, theirs, sigmas.clone(), POS, NEG, x, seed=seed)
    got = comfy.sample.sample_custom(model, noise, cfg, ours, sigmas.clone(), POS, NEG, x, seed=seed)
    _close(got, want, sampler)


def test_sampler_refuses_a_masked_latent(original, model):
    import comfy.sample
    import comfy.samplers

    (ours,) = run_node(tb.IterativeMixingSamplerJax)
    x = _latent(seed=8)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", 4).float()
    mask = torch.ones(1, 4, 4)
    with pytest.raises(ValueError, match=r"^JaxUnsampler_IterativeMixingSampler: a LATENT with a noise_mask"):
        comfy.sample.sample_custom(
            model, torch.zeros_like(x), 1.0, ours, sigmas, POS, NEG, x, noise_mask=mask
        )


def test_ksampler_batch_index_names_the_unsamplers_jax_streams(model):
    """A LATENT's batch_index picks each latent's JAX noise stream in the unsampling (as on the
    Batch Unsampler); the original's torch noise has no streams, so it is unchanged there."""
    x = _latent((1, 4, 4, 4), seed=9)
    args = (model, POS, NEG, 5, 4, 1.5, "euler", "karras", 1.0, 2.4, "cosine", "addition", False)

    def run(latent, source):
        (out,) = run_node(
            tb.IterativeMixingKSamplerJax, model, POS, NEG, latent, *args[3:], noise_source=source
        )
        return out

    plain, indexed = run({"samples": x}, "jax"), run({"samples": x, "batch_index": [7]}, "jax")
    assert not torch.equal(plain["samples"], indexed["samples"]) and indexed["batch_index"] == [7]
    torch.testing.assert_close(
        run({"samples": x}, "torch")["samples"], run({"samples": x, "batch_index": [7]}, "torch")["samples"]
    )
