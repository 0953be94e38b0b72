"""Regression tests of issue #29's hostile probe (round 4): the torch side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_bridge as tb

ROOT = Path(__file__).resolve().parents[1]


def half_t(x, s):
    return x * 0.5


@pytest.mark.parametrize("name", ["linear", "logistic"])
def test_reversed_blending_window_refused(name):
    kw = dict(blending_schedule=name, start_blending_at_pct=0.9, stop_blending_at_pct=0.1)
    with pytest.raises(
        ValueError, match=r"mixing_sample_torch: .*start_blending_at_pct=0.9 and stop_blending_at_pct=0.1"
    ):
        tb.mixing_sample_torch(half_t, torch.ones(1, 4, 4, 4), [3.0, 1.0, 0.5, 0.0], seed=0, **kw)


@pytest.mark.parametrize("start, stop", [(0.9, 0.1), (0.0, 0.0), (None, 0.0)])
def test_cosine_stop_at_step_0_is_finite(start, stop):
    out = tb.mixing_sample_torch(
        half_t, torch.ones(1, 4, 4, 4), [3.0, 1.0, 0.5, 0.0], seed=0,
        start_blending_at_pct=start, stop_blending_at_pct=stop,
    )  # fmt: skip
    assert bool(torch.isfinite(out).all())


def test_normalize_on_mean_of_one_value_per_channel_refused():
    with pytest.raises(ValueError, match=r"mixing_sample_torch: normalize_on_mean .*\(1, 4, 1, 1\)"):
        tb.mixing_sample_torch(
            half_t, torch.ones(1, 4, 1, 1), [3.0, 1.0, 0.0], seed=0, normalize_on_mean=True
        )


def test_import_leaves_preallocate_alone():
    code = (
        "import os; os.environ.pop('XLA_PYTHON_CLIENT_PREALLOCATE', None); import torch_bridge; "
        "assert 'XLA_PYTHON_CLIENT_PREALLOCATE' not in os.environ; "
        "from torch_bridge import NODE_CLASS_MAPPINGS; "
        "assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'; print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_mixing_sample_torch_keeps_dtype(dtype):
    out = tb.mixing_sample_torch(half_t, torch.ones(1, 4, 2, 2, dtype=dtype), [3.0, 1.0, 0.0], seed=0)
    assert out.dtype == dtype


def test_numpy_returning_denoiser_told_torch_tensor():
    with pytest.raises(
        ValueError,
        match=r"must return a torch tensor of shape \(1, 4, 2, 2\).*got numpy\.ndarray of shape",
    ):
        tb.mixing_sample_torch(lambda x, s: x.numpy(), torch.ones(1, 4, 2, 2), [3.0, 1.0, 0.0], seed=0)


def test_meta_latent_refused():
    meta = torch.empty(1, 4, 2, 2, device="meta")
    with pytest.raises(ValueError, match=r"mixing_sample_torch: latent is on device meta"):
        tb.mixing_sample_torch(half_t, meta, [3.0, 1.0, 0.0], seed=0)
    with pytest.raises(ValueError, match=r"inverted_latents_torch: latent is on device meta"):
        tb.inverted_latents_torch(half_t, meta, [0.0, 1.0])


def test_scalar_sigma_torch_denoiser_wrapped():
    def scalar(x, s):
        return x / float(s)  # written for a scalar sigma

    with pytest.raises(
        ValueError, match=r"mixing_sample_torch: the denoiser failed on x of shape .* sigma of shape \(2,\)"
    ):
        tb.mixing_sample_torch(scalar, torch.ones(2, 4, 2, 2), [3.0, 1.0, 0.0], seed=0)


def test_batch_unsampler_refuses_a_latent_the_model_does_not_take():
    # The command refuses it ("does not fit --model ..."); the node by the same rule, read from
    # the model's latent format as ComfyUI declares it (latent_channels, latent_dimensions).
    import torch_bridge_doubles as doubles

    model = doubles.patcher("sd15")
    lf = model.get_model_object("latent_format")
    lf.latent_channels, lf.latent_dimensions = 4, 2
    args = dict(
        model=model, sampler_name="euler", scheduler="normal", steps=3, start_at_step=0, end_at_step=10000
    )
    with pytest.raises(
        ValueError,
        match=r"^JaxUnsampler_BatchUnsampler: latent_image: a latent of shape \(1, 16, 8, 8\) does not fit "
        r"the model \(SD15\), whose latents are \(B, 4, H, W\); pick the model the latent is from$",
    ):
        tb.batch_unsample_comfy(**args, latent_image={"samples": torch.zeros(1, 16, 8, 8)})
    out = tb.batch_unsample_comfy(**args, latent_image={"samples": torch.zeros(1, 4, 8, 8)})
    assert out["samples"].shape == (3, 4, 8, 8)
