"""The node refuses what it cannot use, naming the input a ComfyUI user sets (issue 14 regressions)."""

from __future__ import annotations

import pytest
import torch
import torch_bridge_doubles as doubles
from conftest import run_node

import torch_bridge as tb

PREFIX = "JaxUnsampler_BatchUnsampler: "


def _run(latent, *window, **kw):
    steps, start, end = window or (3, 0, 10000)
    cls = tb.NODE_CLASS_MAPPINGS[tb.NODE_ID]
    return run_node(cls, doubles.patcher("sd15"), "euler", "karras", steps, start, end, latent, **kw)[0]


def _x(batch=2):
    return torch.randn(batch, 4, 3, 3, generator=torch.Generator().manual_seed(0))


def _refused(match, latent, *window, **kw):
    with pytest.raises(ValueError, match=match) as info:
        _run(latent, *window, **kw)
    message = str(info.value)
    assert message.startswith(PREFIX) and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("window", "match"),
    [
        ((0, 0, 10000), "steps is 0, so there is no step to noise; set steps to 1 or more"),
        ((10, 4, 4), r"start_at_step \(4\) must be below both steps \(10\) and end_at_step \(4\)"),
        ((10, 6, 2), r"start_at_step \(6\) must be below both steps \(10\) and end_at_step \(2\)"),
        ((5, 5, 10000), r"start_at_step \(5\) must be below both steps \(5\) and end_at_step \(10000\)"),
        ((3, 0, 0), r"end_at_step must be an integer in \[1, 10000\], got 0"),
    ],
)
@pytest.mark.parametrize("noise_source", ["jax", "torch"])
def test_empty_window_is_refused_with_the_inputs_named(window, match, noise_source):
    # An empty LATENT breaks every node after this one (the Python API keeps the empty batch).
    _refused(PREFIX + match, {"samples": _x()}, *window, noise_source=noise_source)


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (
            "mask",
            r"noise_mask must be a mask tensor of shape \(H, W\), \(B, H, W\) or \(B, 1, H, W\).*str",
        ),
        (torch.tensor(1.0), r"noise_mask must be a mask tensor.*got shape \(\)"),
        (torch.ones(3), r"noise_mask must be a mask tensor.*got shape \(3,\)"),
        (torch.ones(2, 1, 1, 3, 3), r"noise_mask must be a mask tensor.*got shape \(2, 1, 1, 3, 3\)"),
        (torch.ones(2, 0, 3), r"noise_mask must be a mask tensor.*got shape \(2, 0, 3\)"),
        (torch.ones(2, 3, 3, dtype=torch.int64), "noise_mask must hold float"),
    ],
)
@pytest.mark.parametrize("noise_source", ["jax", "torch"])
def test_bad_noise_mask_is_refused(mask, match, noise_source):
    _refused(
        PREFIX + "latent_image: " + match, {"samples": _x(), "noise_mask": mask}, noise_source=noise_source
    )


def test_good_noise_masks_still_pass():
    for mask in (
        torch.ones(24, 24),
        torch.ones(2, 24, 24),
        torch.ones(1, 1, 24, 24),
        torch.ones(2, 24, 24) > 0,
    ):
        out = _run({"samples": _x(), "noise_mask": mask})
        assert out["samples"].shape == (6, 4, 3, 3)


@pytest.mark.parametrize(
    ("index", "match"),
    [
        ([7], r"got 1 entries: \[7\]"),
        ([7, 8, 9], r"got 3 entries"),
        ([0, 1.5], r"got the entry 1.5"),
        ([0.0, 1.0], r"got the entry 0.0"),
        ("01", r"got str '01'"),
        (3, r"got int 3"),
        ([0, -1], r"got the entry -1"),
        ([0, 2**32], r"got the entry 4294967296"),
        ([True, False], r"got the entry True"),
    ],
)
@pytest.mark.parametrize("noise_source", ["jax", "torch"])
def test_bad_batch_index_is_refused_for_both_noise_sources(index, match, noise_source):
    expected = r"latent_image: batch_index must be a list of 2 integers from 0 to 4294967295 .*"
    _refused(PREFIX + expected + match, {"samples": _x(), "batch_index": index}, noise_source=noise_source)


def test_good_batch_index_still_keys_the_noise():
    a = _run({"samples": _x(), "batch_index": [4, 5]})["samples"]
    b = _run({"samples": _x(), "batch_index": torch.tensor([4, 5])})["samples"]
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("samples", "match"),
    [
        (torch.zeros(0, 4, 3, 3), r"latent_image: the LATENT holds no latents \(batch size 0\)"),
        (
            torch.zeros(1, 4, 0, 3),
            r"latent_image: the LATENT's samples have an empty axis \(shape \(1, 4, 0, 3\)\)",
        ),
    ],
)
def test_empty_latents_are_refused(samples, match):
    _refused(PREFIX + match, {"samples": samples})


def _inputs(**changes):
    inputs = dict(
        model=doubles.patcher("sd15"), sampler_name="euler", scheduler="karras", steps=3, start_at_step=0,
        end_at_step=10000, latent_image={"samples": _x()}, normalize=False,
    )  # fmt: skip
    return {**inputs, **changes}


@pytest.mark.parametrize(
    ("changes", "match", "internal"),
    [
        (
            dict(scheduler="karas"),
            r"unknown scheduler 'karas' \(did you mean 'karras'\?\)",
            "ksampler_sigmas",
        ),
        (
            dict(sampler_name="eulr"),
            r"unknown sampler_name 'eulr' \(did you mean 'euler'\?\)",
            "ksampler_sigmas",
        ),
        (dict(model={"not": "a model"}), "model: cannot find a model_sampling", "model_sampling_from_comfy"),
        (dict(latent_image=None), "latent_image: expected a LATENT dict", "latent_samples"),
    ],
)
def test_errors_name_the_nodes_inputs_not_internal_functions(changes, match, internal):
    with pytest.raises(ValueError, match=PREFIX + match) as info:
        tb.batch_unsample_comfy(**_inputs(**changes))
    assert internal not in str(info.value) and "\n" not in str(info.value)
