"""The ComfyUI node, with ModelPatcher test doubles (no ComfyUI needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import torch_bridge_doubles as doubles
from conftest import run_node

import jax_unsampler as ju
import torch_bridge as tb

ROOT = Path(__file__).resolve().parents[1]


def _node():
    cls = tb.NODE_CLASS_MAPPINGS[tb.NODE_ID]
    return lambda *args, **kw: run_node(cls, *args, **kw)[0]


def _sigmas(family, sampler, scheduler, steps, start=0, end=10000):
    p = ju.preset(family)
    return np.asarray(
        ju.unsampler_sigmas(p.model_sampling, sampler, scheduler, steps, start, end, p.latent_scale_factor)
    )


def _torch_eps(seed, n, x):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n * x.shape[0], *x.shape[1:]), generator=g, dtype=x.dtype)


def test_inputs_and_outputs_match_the_original_node():
    cls = tb.NODE_CLASS_MAPPINGS[tb.NODE_ID]
    spec = cls.INPUT_TYPES()
    required = spec["required"]
    assert list(required) == [
        "model", "sampler_name", "scheduler", "steps", "start_at_step", "end_at_step",
        "latent_image", "normalize",
    ]  # fmt: skip
    assert required["model"] == ("MODEL",)
    assert required["latent_image"] == ("LATENT",)
    assert list(required["sampler_name"][0]) == list(ju.SAMPLERS)
    assert list(required["scheduler"][0]) == list(ju.SCHEDULERS)
    assert required["steps"] == ("INT", {"default": 10000, "min": 0, "max": 10000})
    assert required["start_at_step"] == ("INT", {"default": 0, "min": 0, "max": 10000})
    assert required["end_at_step"] == ("INT", {"default": 10000, "min": 1, "max": 10000})
    assert required["normalize"] == ("BOOLEAN", {"default": False})
    optional = spec["optional"]
    assert optional["seed"][0] == "INT"
    assert (optional["seed"][1]["min"], optional["seed"][1]["max"]) == (0, 2**64 - 1)
    assert optional["noise_source"][0] == ["jax", "torch"]
    assert optional["mode"][0] == ["node", "model"] and optional["mode"][1]["default"] == "node"
    assert optional["coupling"][0] == ["independent", "shared", "markov"]
    assert optional["coupling"][1]["default"] == "independent"
    assert cls.RETURN_TYPES == ("LATENT",)
    assert cls.RETURN_NAMES == ("latent_batch",)
    assert tb.NODE_ID != "BatchUnsampler" and tb.NODE_ID.startswith("JaxUnsampler")
    assert set(tb.NODE_DISPLAY_NAME_MAPPINGS) == set(tb.NODE_CLASS_MAPPINGS)


def test_node_loads_without_jax_and_offers_the_cores_names():
    # The node's choices come from the core's JAX-free tables: no copy to drift, no JAX at load.
    code = (
        "import sys, json, torch_bridge as tb; spec = tb.BatchUnsamplerJax.INPUT_TYPES();"
        "print(json.dumps([sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib')),"
        " spec['required']['sampler_name'][0], spec['required']['scheduler'][0],"
        " spec['optional']['coupling'][0], spec['optional']['mode'][0]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    jax_modules, samplers, schedulers, couplings, modes = json.loads(out.stdout)
    assert jax_modules == []
    assert (tuple(samplers), tuple(schedulers)) == (ju.SAMPLERS, ju.SCHEDULERS)
    assert (tuple(couplings), tuple(modes)) == (ju.COUPLINGS, ju.MODES)


def test_batch_of_three_with_extra_latent_keys():
    x = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    latent = {
        "samples": x,
        "batch_index": [0, 1, 2],
        "noise_mask": torch.rand(3, 1, 5, 6),
        "type": "image",
        "downscale_ratio_spacial": 8,
    }
    out = _node()(
        doubles.patcher("sd15"), "euler", "karras", 4, 0, 10000, latent, False, seed=11, noise_source="torch"
    )
    s = _sigmas("sd15", "euler", "karras", 4)
    eps = _torch_eps(11, 4, x).numpy().reshape(4, 3, 4, 5, 6)
    want = (x.numpy()[None] + s.reshape(4, 1, 1, 1, 1) * eps).reshape(12, 4, 5, 6)
    np.testing.assert_allclose(out["samples"].numpy(), want, rtol=1e-6, atol=1e-5)
    assert out["type"] == "image" and out["downscale_ratio_spacial"] == 8
    assert out["batch_index"] == list(range(12))
    assert out["noise_mask"].shape == (12, 1, 5, 6)
    torch.testing.assert_close(out["noise_mask"][6:9], latent["noise_mask"])


def test_float16_latents_keep_their_dtype_and_the_originals_noise():
    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(2)).half()
    out = _node()(
        doubles.patcher("sdxl"), "euler", "normal", 3, 0, 10000, {"samples": x}, seed=5, noise_source="torch"
    )
    z = out["samples"]
    assert z.dtype == torch.float16
    eps = _torch_eps(5, 3, x)  # what randn_like draws for a float16 latent
    s = _sigmas("sdxl", "euler", "normal", 3)
    want = x.float().numpy() + s.reshape(3, 1, 1, 1) * eps.float().numpy()
    np.testing.assert_allclose(z.float().numpy(), want, rtol=2e-3, atol=2e-3)
    out = _node()(doubles.patcher("sdxl"), "euler", "normal", 3, 0, 10000, {"samples": x.bfloat16()}, seed=5)
    assert out["samples"].dtype == torch.bfloat16


def test_old_style_model_and_5d_latent_with_jax_noise():
    x = torch.zeros(2, 16, 3, 2, 2)
    model = doubles.OldModelPatcher(doubles.BaseModel("wan21"))
    out = _node()(model, "euler", "sgm_uniform", 5, 1, 4, {"samples": x}, seed=3, noise_source="jax")
    z = out["samples"]
    assert z.shape == (6, 16, 3, 2, 2)
    s = _sigmas("wan21", "euler", "sgm_uniform", 5, 1, 4)
    want = ju.noised_latents(jax.random.key(3), x.numpy(), s)
    np.testing.assert_allclose(z.numpy(), np.asarray(want), rtol=1e-6, atol=1e-6)
    # each entry's spread follows its sigma (the noise is standard normal)
    stds = z.numpy().reshape(3, -1).std(axis=1)
    np.testing.assert_allclose(stds, s, rtol=0.2)


def test_jax_noise_uses_the_latents_batch_index_and_any_64_bit_seed():
    x = torch.zeros(1, 4, 4, 4)
    run = _node()
    args = (doubles.patcher("sd15"), "euler", "simple", 2, 0, 10000)
    plain = run(*args, {"samples": x}, seed=9)["samples"]
    indexed = run(*args, {"samples": x, "batch_index": [5]}, seed=9)["samples"]
    s = _sigmas("sd15", "euler", "simple", 2)
    want = ju.noised_latents(jax.random.key(9), x.numpy(), s, batch_index=np.array([5]))
    np.testing.assert_allclose(indexed.numpy(), np.asarray(want), rtol=1e-6)
    assert not torch.equal(plain, indexed)
    big = run(*args, {"samples": x}, seed=2**64 - 1)["samples"]
    other = run(*args, {"samples": x}, seed=2**32 - 1)["samples"]
    assert torch.isfinite(big).all() and not torch.equal(big, other)


@pytest.mark.parametrize("coupling", ["shared", "markov"])
def test_torch_noise_with_couplings(coupling):
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(4))
    out = _node()(
        doubles.patcher("sd15"), "euler", "karras", 3, 0, 10000, {"samples": x},
        seed=8, noise_source="torch", coupling=coupling,
    )["samples"].numpy()  # fmt: skip
    s = _sigmas("sd15", "euler", "karras", 3)
    eps = _torch_eps(8, 3, x).numpy().reshape(3, 2, 4, 3, 3)
    if coupling == "shared":
        noise = s.reshape(3, 1, 1, 1, 1) * eps[:1]
    else:  # each step adds the variance from the previous sigma to the next
        noise, prev, acc = [], 0.0, 0.0
        for i in range(3):
            acc = acc + np.sqrt(s[i] ** 2 - prev**2) * eps[i]
            noise.append(acc)
            prev = s[i]
        noise = np.stack(noise)
    want = (x.numpy()[None] + noise).reshape(6, 4, 3, 3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


def test_3d_audio_latent_model_mode():
    x = torch.zeros(1, 64, 8)
    out = _node()(
        doubles.patcher("stable-audio"), "euler", "exponential", 3, 0, 10000, {"samples": x}, mode="model"
    )
    assert out["samples"].shape == (3, 64, 8)


def test_runs_under_inference_mode_as_comfyui_runs_nodes():
    with torch.inference_mode():
        x = torch.ones(1, 4, 2, 2)
        out = _node()(
            doubles.patcher("sd15"), "euler", "karras", 2, 0, 10000, {"samples": x}, noise_source="torch"
        )
    assert out["samples"].shape == (2, 4, 2, 2)


def test_clear_errors():
    run = _node()
    args = (doubles.patcher("sd15"), "euler", "karras", 2, 0, 10000)
    with pytest.raises(
        ValueError, match=r"JaxUnsampler_BatchUnsampler: latent_image: the LATENT has no 'samples' tensor"
    ):
        run(*args, {"noise_mask": torch.ones(1, 1, 2, 2)})
    with pytest.raises(ValueError, match="unknown noise_source 'numpy'; valid choices: jax, torch"):
        run(*args, {"samples": torch.zeros(1, 4, 2, 2)}, noise_source="numpy")
    with pytest.raises(ValueError, match="seed must be an integer in"):
        run(*args, {"samples": torch.zeros(1, 4, 2, 2)}, seed=-1)
    with pytest.raises(
        ValueError, match="JaxUnsampler_BatchUnsampler: model: cannot find a model_sampling in a dict"
    ):
        run({"not": "a model"}, "euler", "karras", 2, 0, 10000, {"samples": torch.zeros(1, 4, 2, 2)})
    with pytest.raises(ValueError, match="unknown scheduler 'bogus'"):
        run(doubles.patcher("sd15"), "euler", "bogus", 2, 0, 10000, {"samples": torch.zeros(1, 4, 2, 2)})


def test_comfyuis_own_lists_and_schedulers_are_used_inside_comfyui(monkeypatch):
    """With `comfy.samplers` importable, its lists are offered, and a scheduler jax_unsampler
    does not implement is computed by ComfyUI's own `calculate_sigmas`."""
    calls = []

    def calculate_sigmas(model_sampling, scheduler, steps):
        calls.append((type(model_sampling).__name__, scheduler, steps))
        return torch.linspace(8.0, 0.0, steps + 1)

    class KSampler:
        SAMPLERS = [*ju.SAMPLERS, "new_sampler", "new_half_step_sampler"]
        SCHEDULERS = [*ju.SCHEDULERS, "new_scheduler"]
        DISCARD_PENULTIMATE_SIGMA_SAMPLERS = {*ju.DISCARD_PENULTIMATE_SAMPLERS, "new_half_step_sampler"}

    comfy = types.ModuleType("comfy")
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler, samplers.calculate_sigmas = KSampler, calculate_sigmas
    comfy.samplers = samplers
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.samplers", samplers)

    spec = tb.NODE_CLASS_MAPPINGS[tb.NODE_ID].INPUT_TYPES()["required"]
    assert spec["sampler_name"][0] == KSampler.SAMPLERS
    assert spec["scheduler"][0] == KSampler.SCHEDULERS

    x = torch.zeros(1, 4, 2, 2)
    run = _node()
    out = run(
        doubles.patcher("sd15"), "new_half_step_sampler", "new_scheduler", 4, 1, 3, {"samples": x}, seed=1
    )
    assert calls == [("ModelSampling", "new_scheduler", 5)]
    # linspace(8, 0, 6) = [8, 6.4, 4.8, 3.2, 1.6, 0]; drop the penultimate; [1:3]; / 0.18215; flip
    want = np.array([4.8, 6.4], np.float32) / np.float32(0.18215)
    got = out["samples"].numpy().reshape(2, -1).std(axis=1)
    np.testing.assert_allclose(got, want, rtol=0.35)
    # a sampler only ComfyUI knows: its sigmas as KSampler computes them (here: like euler)
    a = run(doubles.patcher("sd15"), "new_sampler", "karras", 3, 0, 10000, {"samples": x}, seed=1)
    b = run(doubles.patcher("sd15"), "euler", "karras", 3, 0, 10000, {"samples": x}, seed=1)
    assert torch.equal(a["samples"], b["samples"])


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_importing_the_node_imports_no_jax_and_survives_a_broken_jax():
    done = _python(
        """
        import os, sys
        os.environ.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
        sys.modules["jax"] = None  # a broken JAX install: "import jax" raises ImportError
        from torch_bridge import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
        assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        ids = {"JaxUnsampler_BatchUnsampler", "JaxUnsampler_InvertedBatchUnsampler",
               "JaxUnsampler_LatentBatchStatistics", "JaxUnsampler_IterativeMixingKSampler",
               "JaxUnsampler_IterativeMixingKSamplerAdvanced", "JaxUnsampler_IterativeMixingSampler"}
        assert set(NODE_CLASS_MAPPINGS) == ids
        for cls in NODE_CLASS_MAPPINGS.values():
            spec = cls.INPUT_TYPES()["required"]
            assert "sampler_name" not in spec or len(spec["sampler_name"][0]) == 42
        assert "matplotlib" not in sys.modules
        # the core's name tables are loaded, JAX is not
        assert not [m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib") and sys.modules[m]]
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_jax_unsampler_never_imports_torch():
    done = _python("import sys, jax_unsampler; assert 'torch' not in sys.modules; print('ok')")
    assert done.returncode == 0, done.stderr
