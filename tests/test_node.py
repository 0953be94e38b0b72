"""The node's sigmas (slice, divide by the latent scale factor, flip) against golden node cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_sigmas_close, golden_sigmas, grouped

import jax_unsampler as ju

GOLDEN = golden_sigmas()
GROUPS = grouped(GOLDEN["node_cases"], "family", "scheduler")


# The first cases of every family and scheduler in the quick suite, the rest in the slow one
# (each case's step count is a compilation).
QUICK_CASES = 1


def _check_golden_node(family, scheduler, cases):
    p = ju.preset(family)
    ms, scale = p.model_sampling, p.latent_scale_factor
    for case in cases:
        got = ju.unsampler_sigmas(
            ms, case["sampler"], scheduler, case["steps"], case["start_at_step"], case["end_at_step"],
            latent_scale_factor=scale,
        )  # fmt: skip
        expected = np.asarray(case["node_sigmas"], float)
        window = f"[{case['start_at_step']}:{case['end_at_step']}]"
        context = f"{family}/{scheduler}/{case['sampler']}/{case['steps']}{window}"
        if np.isnan(expected).any():  # the documented kl_optimal one-step difference
            assert scheduler == "kl_optimal" and case["steps"] == 1
            np.testing.assert_allclose(np.asarray(got), [float(ms.sigma_max) / scale], rtol=1e-6)
            continue
        assert_sigmas_close(got, expected, float(ms.sigma_max) / scale, context)


@pytest.mark.parametrize(("family", "scheduler"), list(GROUPS))
def test_golden_node_sigmas(family, scheduler):
    _check_golden_node(family, scheduler, GROUPS[family, scheduler][:QUICK_CASES])


@pytest.mark.slow
@pytest.mark.parametrize(("family", "scheduler"), list(GROUPS))
def test_golden_node_sigmas_remaining_cases(family, scheduler):
    _check_golden_node(family, scheduler, GROUPS[family, scheduler][QUICK_CASES:])


def test_all_node_cases_are_covered():
    assert sum(len(v) for v in GROUPS.values()) == len(GOLDEN["node_cases"]) == 1088


def test_sd15_quirk_and_its_off_switch():
    ms = ju.preset("sd15").model_sampling
    divided = np.asarray(ju.unsampler_sigmas(ms, "euler", "normal", 10, latent_scale_factor=0.18215))
    plain = np.asarray(ju.unsampler_sigmas(ms, "euler", "normal", 10))
    np.testing.assert_allclose(divided[-1], 80.2341, rtol=1e-5)  # 14.6146 / 0.18215
    np.testing.assert_allclose(plain[-1], 14.614641, rtol=1e-6)
    assert np.all(np.diff(plain) > 0)  # flipped: least noise first


@pytest.mark.parametrize(("steps", "start", "end"), [(0, 0, 10000), (10, 5, 5), (10, 8, 3), (10, 20, 30)])
def test_empty_slices(steps, start, end):
    ms = ju.preset("sdxl").model_sampling
    assert ju.unsampler_sigmas(ms, "euler", "karras", steps, start, end).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(start_at_step=-1), r"start_at_step must be an integer in \[0, 10000\], got -1"),
        (dict(end_at_step=-3), r"end_at_step must be an integer in \[0, 10000\], got -3"),
        (dict(end_at_step=10001), r"end_at_step must be an integer in \[0, 10000\], got 10001"),
        (dict(steps=-5), r"steps must be an integer in \[0, 10000\], got -5"),
        (dict(latent_scale_factor=0.0), r"latent_scale_factor must be a positive finite number"),
    ],
)
def test_bad_bounds_raise(kwargs, match):
    args = dict(ms=ju.preset("sd15").model_sampling, sampler_name="euler", scheduler="karras", steps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ju.unsampler_sigmas(**args)


@pytest.mark.parametrize("fn", [ju.unsampler_sigmas, ju.ksampler_sigmas])
def test_the_old_sampler_keyword_still_works_with_a_deprecation_warning(fn):
    ms = ju.preset("sd15").model_sampling
    want = fn(ms, "dpm_2", "karras", 6)
    with pytest.warns(DeprecationWarning, match="sampler= is now sampler_name="):
        got = fn(ms, sampler="dpm_2", scheduler="karras", steps=6)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="pass sampler_name= only"):
        fn(ms, sampler="euler", sampler_name="euler", scheduler="karras", steps=6)
