"""The Latent Batch Statistics node on ComfyUI model patchers (needs COMFYUI_PATH).

Its statistics are checked against numpy on the batch and against the formula with ComfyUI's
own KSampler sigmas; its IMAGE against the command's figure for the same statistics; its
errors name the node and the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import comfy_patcher, needs_comfyui, run_node

import torch_bridge as tb

pytestmark = needs_comfyui
SD15_SCALE = 0.18215
FN = "JaxUnsampler_LatentBatchStatistics"


def _batch(comfy, steps=12, seed=3):
    patcher = comfy_patcher(comfy, "sd15")
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.2
    args = (patcher, "euler", "karras", steps, 0, 10000, {"samples": x}, False)
    (batch,) = run_node(tb.BatchUnsamplerJax, *args, seed=seed, noise_source="torch")
    return patcher, x, batch


def test_statistics_are_the_batchs_and_the_formulas(comfy):
    patcher, x, batch = _batch(comfy)
    stats = tb.latent_batch_statistics(batch, {"samples": x}, patcher, "euler", "karras", 12, 0, 10000)
    z = batch["samples"].double().numpy().reshape(12, -1)
    np.testing.assert_allclose(stats.mean, z.mean(axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.std, z.std(axis=1), rtol=1e-6)
    # x + s * eps with eps ~ N(0, 1): the std of a step's entries is sqrt(s^2 + var(x)), with s
    # ComfyUI's own KSampler sigmas over the latent scale factor, least noise first.
    ks = comfy.samplers.KSampler(patcher, 12, "cpu", sampler="euler", scheduler="karras", denoise=1.0)
    s = (ks.sigmas[:12].double().numpy() / SD15_SCALE)[::-1]
    np.testing.assert_allclose(stats.sigmas, s, rtol=1e-6)
    np.testing.assert_allclose(stats.expected_std, np.sqrt(s**2 + x.double().numpy().var()), rtol=1e-5)
    np.testing.assert_allclose(stats.expected_mean, np.full(12, x.double().numpy().mean()), rtol=1e-5)
    # The measured std follows the formula within sampling error (2048 entries a step).
    np.testing.assert_allclose(stats.std, stats.expected_std, rtol=0.08)
    assert (stats.ks > 0).all() and (stats.ks < 0.1).all()  # Gaussian noise: near N(0, 1)


def test_the_image_is_the_commands_figure(comfy, tmp_path):
    from PIL import Image

    patcher, x, batch = _batch(comfy)
    inputs = (batch, patcher, "euler", "karras", 12, 0, 10000, {"samples": x}, False)
    (image,) = run_node(tb.LatentBatchStatisticsJax, *inputs)
    assert image.shape == (1, 750, 700, 3) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    # The command writes the same figure as PNG (StatsCollector.save, 100 dpi).
    stats = tb.latent_batch_statistics(batch, {"samples": x}, patcher, "euler", "karras", 12, 0, 10000)
    stats.save(str(tmp_path / "stats.png"), "12 steps x 2 latents: euler, karras, mode node")
    png = np.asarray(Image.open(tmp_path / "stats.png").convert("RGB"), np.float32) / 255
    np.testing.assert_array_equal(image[0].numpy(), png)
    # Another batch, another picture.
    _, _, other = _batch(comfy, seed=4)
    (image2,) = run_node(tb.LatentBatchStatisticsJax, other, *inputs[1:])
    assert not torch.equal(image, image2)


def test_errors_name_the_node_and_the_input(comfy):
    patcher, x, batch = _batch(comfy)
    cases = [
        ((batch, patcher, "euler", "karras", 11, 0, 10000, {"samples": x}, False), "latent_batch has shape"),
        (
            ("no", patcher, "euler", "karras", 12, 0, 10000, {"samples": x}, False),
            "latent_batch: expected a LATENT",
        ),
        ((batch, object(), "euler", "karras", 12, 0, 10000, {"samples": x}, False), "model: "),
        ((batch, patcher, "euler", "nope", 12, 0, 10000, {"samples": x}, False), "scheduler"),
        ((batch, patcher, "euler", "karras", 12, 0, 10000, {}, False), "latent_image: "),
    ]
    for args, text in cases:
        with pytest.raises(ValueError) as err:
            run_node(tb.LatentBatchStatisticsJax, *args)
        message = str(err.value)
        assert message.startswith(f"{FN}: ") and text in message and "\n" not in message, message
