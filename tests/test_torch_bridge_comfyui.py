"""The node inside a real ComfyUI checkout: set COMFYUI_PATH to one to run this (skipped otherwise).

Uses ComfyUI's own ModelPatcher, model sampling classes, latent formats, sampler lists and
KSampler around a tiny torch module (no weights, no GPU). ComfyUI's start-up imports
torchvision, which may not load beside a CPU-only torch; where it does not, stand-in modules
take its place (model sampling never uses it).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util

import numpy as np
import pytest
import torch
from conftest import COMFY_FAMILIES, DATA, comfy_patcher, needs_comfyui, run_node

pytestmark = needs_comfyui


def _patcher(comfy, family, old_style=False):
    return comfy_patcher(comfy, family, old_style)


def _node():
    from torch_bridge import NODE_CLASS_MAPPINGS, NODE_ID

    cls = NODE_CLASS_MAPPINGS[NODE_ID]
    return cls, lambda *a, **k: run_node(cls, *a, **k)[0]


def test_golden_cases_with_comfyuis_own_objects(comfy):
    import json

    data = np.load(DATA / "node_outputs.npz")
    cases = json.loads(str(data["index"]))
    _, run = _node()
    for i, case in enumerate(cases):
        if case["family"] not in COMFY_FAMILIES:
            continue
        x = torch.from_numpy(data[f"x{i}"])
        with torch.inference_mode():
            out = run(
                _patcher(comfy, case["family"]), case["sampler"], case["scheduler"], case["steps"],
                case["start_at_step"], case["end_at_step"], {"samples": x}, case["normalize"],
                seed=case["seed"], noise_source="torch",
            )  # fmt: skip
        z = out["samples"].numpy()
        if "error" in case:  # the 5-D case: the original's formula
            s = data[f"sigmas{i}"]
            g = torch.Generator().manual_seed(case["seed"])
            eps = torch.randn((len(s) * x.shape[0], *x.shape[1:]), generator=g).numpy()
            want = x.numpy().repeat(len(s), axis=0) + s.reshape(-1, *[1] * (x.ndim - 1)) * eps
        else:
            want = data[f"z{i}"]
        assert np.max(np.abs(z - want)) <= 1e-6 * max(1.0, float(np.max(np.abs(want)))), case


@pytest.mark.parametrize("family", ["sd15", "sd3", "flux-dev"])
def test_every_comfyui_scheduler_matches_comfyuis_ksampler(comfy, family):
    from torch_bridge import model_sampling_from_comfy
    from torch_bridge._node import node_sigmas

    cls, run = _node()
    spec = cls.INPUT_TYPES()["required"]
    assert list(spec["sampler_name"][0]) == list(comfy.samplers.KSampler.SAMPLERS)
    assert list(spec["scheduler"][0]) == list(comfy.samplers.KSampler.SCHEDULERS)
    patcher = _patcher(comfy, family)
    scale = patcher.get_model_object("latent_format").scale_factor
    channels = patcher.get_model_object("latent_format").latent_channels  # the node refuses others
    ms = model_sampling_from_comfy(patcher)
    top = float(patcher.get_model_object("model_sampling").sigma_max) / scale
    for scheduler in comfy.samplers.KSampler.SCHEDULERS:
        for sampler in ("euler", "dpm_2"):
            ks = comfy.samplers.KSampler(patcher, 7, "cpu", sampler=sampler, scheduler=scheduler, denoise=1.0)
            want = (ks.sigmas[1:6].float() / scale).flip(0).numpy()
            got = np.asarray(node_sigmas("test", patcher, ms, sampler, scheduler, 7, 1, 6, scale))
            assert got.shape == want.shape, (scheduler, sampler)
            np.testing.assert_allclose(
                got, want, rtol=1e-5, atol=1e-6 * top, err_msg=f"{scheduler} {sampler}"
            )
            latent = {"samples": torch.zeros(1, channels, 2, 2)}
            out = run(patcher, sampler, scheduler, 7, 1, 6, latent, seed=3)
            assert out["samples"].shape == (len(want), channels, 2, 2)


def test_old_style_model_batch_3_float16_5d_and_extra_keys(comfy):
    _, run = _node()
    x = torch.randn(3, 16, 2, 4, 4).half()
    latent = {"samples": x, "batch_index": [0, 1, 2], "type": "video", "extra": 1}
    out = run(_patcher(comfy, "wan21", old_style=True), "euler", "simple", 4, 0, 10000, latent, mode="model")
    assert out["samples"].shape == (12, 16, 2, 4, 4) and out["samples"].dtype == torch.float16
    assert out["type"] == "video" and out["extra"] == 1 and out["batch_index"] == list(range(12))


def test_the_installed_shim_loads_as_comfyui_loads_custom_nodes(comfy, tmp_path):
    import torch_bridge

    (tmp_path / "custom_nodes").mkdir()
    shim = torch_bridge.install_comfyui_node(tmp_path)
    spec = importlib.util.spec_from_file_location(
        "jax_unsampler_node", shim, submodule_search_locations=[str(shim.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS is torch_bridge.NODE_CLASS_MAPPINGS
