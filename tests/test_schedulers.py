"""Every golden schedule: KSampler sigmas for 16 families x 9 schedulers x 12 step counts x 2 samplers."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import assert_sigmas_close, golden_sigmas, grouped, quick_subset

import jax_unsampler as ju

GOLDEN = golden_sigmas()
GROUPS = grouped(GOLDEN["schedules"], "family", "scheduler")


def _is_documented_kl_optimal_nan(case):
    return case["scheduler"] == "kl_optimal" and np.isnan(np.asarray(case["sigmas"], float)).any()


# Every other family-scheduler pair at these step counts in the quick suite (one step and many:
# the edge case and the long tail), every pair in the slow sweep, which also takes the other ten
# step counts. Each step count is a compilation, which is what makes the whole sweep slow.
QUICK_STEPS = (1, 100)


def _check_golden(family, scheduler, quick):
    ms = ju.preset(family).model_sampling
    sigma_max = float(ms.sigma_max)
    for case in GROUPS[family, scheduler]:
        if (case["steps"] in QUICK_STEPS) != quick:
            continue
        got = ju.ksampler_sigmas(ms, case["sampler"], scheduler, case["steps"])
        context = f"{family}/{scheduler}/{case['sampler']}/{case['steps']}"
        if _is_documented_kl_optimal_nan(case):
            # ComfyUI returns [nan, 0] for one kl_optimal step; we return [sigma_max, 0].
            assert case["steps"] == 1 and case["sampler"] not in ju.DISCARD_PENULTIMATE_SAMPLERS
            np.testing.assert_array_equal(np.asarray(got), [np.float32(sigma_max), 0.0])
            continue
        assert_sigmas_close(got, case["sigmas"], sigma_max, context)


@pytest.mark.parametrize(("family", "scheduler"), quick_subset(list(GROUPS), 2, unpack=True))
def test_golden_schedules(family, scheduler):
    _check_golden(family, scheduler, quick=True)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "scheduler"), list(GROUPS))
def test_golden_schedules_at_every_other_step_count(family, scheduler):
    _check_golden(family, scheduler, quick=False)


def test_golden_names_and_orders():
    assert ju.SCHEDULERS == tuple(GOLDEN["schedulers"])
    assert ju.SAMPLERS == tuple(GOLDEN["samplers"])
    assert ju.DISCARD_PENULTIMATE_SAMPLERS == tuple(GOLDEN["discard_penultimate_samplers"])
    assert len(ju.SAMPLERS) == 42 and len(ju.SCHEDULERS) == 9


def test_every_golden_family_scheduler_pair_is_covered():
    assert len(GOLDEN["schedules"]) == 3456
    assert set(GROUPS) == {(f, s) for f in GOLDEN["families"] for s in ju.SCHEDULERS}


@pytest.mark.parametrize("scheduler", ju.SCHEDULERS)
@pytest.mark.parametrize(
    "family", quick_subset(["sd15", "flux-dev", "stable-cascade-c", "svd", "stable-audio"], 5)
)
def test_schedule_under_jit_equals_eager(family, scheduler):
    """With the model sampling traced (table, shift, ...), the schedule is the same."""
    ms = ju.preset(family).model_sampling
    eager = ju.calculate_sigmas(ms, scheduler, 13)
    jitted = jax.jit(lambda m: ju.calculate_sigmas(m, scheduler, 13))(ms)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))


def test_new_values_of_the_same_shapes_do_not_recompile():
    from jax_unsampler._schedulers import _calculate_sigmas

    a = ju.model_sampling("FLOW", {"shift": 3.0})
    b = ju.model_sampling("FLOW", {"shift": 7.0})
    ju.calculate_sigmas(a, "normal", 17)
    size = _calculate_sigmas._cache_size()
    second = ju.calculate_sigmas(b, "normal", 17)
    assert _calculate_sigmas._cache_size() == size
    assert not np.allclose(np.asarray(second), np.asarray(ju.calculate_sigmas(a, "normal", 17)))


@pytest.mark.parametrize("scheduler", ju.SCHEDULERS)
def test_zero_steps_give_a_lone_zero(scheduler):
    ms = ju.preset("sd15").model_sampling
    np.testing.assert_array_equal(np.asarray(ju.calculate_sigmas(ms, scheduler, 0)), [0.0])


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ju.SCHEDULERS)
def test_ten_thousand_steps(scheduler):
    """The node's default step count: finite, non-increasing and ending in 0."""
    ms = ju.preset("sdxl").model_sampling
    s = np.asarray(ju.ksampler_sigmas(ms, "euler", scheduler, 10000))
    assert np.all(np.isfinite(s)) and s[-1] == 0.0
    assert np.all(np.diff(s) <= 1e-6 * s[0])
    if scheduler not in ("ddim_uniform", "beta"):
        assert s.shape == (10001,)


def test_ddim_uniform_length_follows_a_near_zero_second_sigma():
    """If table[1] is ~0, ComfyUI computes n + 1 steps and drops the leading 0."""
    table = np.geomspace(1e-7, 10.0, 1000)
    table[0] = 5e-8
    ms = ju.model_sampling_from_table(table)
    assert ms.second_sigma_is_zero
    plain = ju.model_sampling_from_table(np.geomspace(1e-2, 10.0, 1000))
    # n=7: stride 1000 // 8 = 125 -> indices 1, 126, ..., 876 (8 values) and no leading zero.
    near_zero = np.asarray(ju.calculate_sigmas(ms, "ddim_uniform", 7))
    np.testing.assert_allclose(near_zero, table[np.arange(1, 1000, 125)][::-1].astype(np.float32))
    # Otherwise stride 1000 // 7 = 142 -> indices 1, ..., 995 (8 values) with a 0 first.
    usual = np.asarray(ju.calculate_sigmas(plain, "ddim_uniform", 7))
    assert usual.shape == (8 + 1,) and usual[-1] == 0.0
    # Under jit the flag comes from the pytree's static field and gives the same lengths.
    assert jax.jit(lambda m: ju.calculate_sigmas(m, "ddim_uniform", 7))(ms).shape == near_zero.shape


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda ms: ju.calculate_sigmas(ms, "karas", 10),
            r"unknown scheduler 'karas' \(did you mean 'karras'\?\)",
        ),
        (
            lambda ms: ju.calculate_sigmas(ms, "karras", -1),
            r"steps must be an integer in \[0, 10000\], got -1",
        ),
        (
            lambda ms: ju.calculate_sigmas(ms, "karras", 10001),
            r"steps must be an integer in \[0, 10000\], got 10001",
        ),
        (lambda ms: ju.calculate_sigmas(ms, "karras", 2.5), r"steps must be an integer"),
        (lambda ms: ju.calculate_sigmas(ms, "karras", True), r"steps must be an integer"),
        (lambda ms: ju.calculate_sigmas("sd15", "karras", 10), r"expected a ModelSampling"),
        (lambda ms: ju.ksampler_sigmas(ms, "eular", "karras", 10), r"unknown sampler 'eular'.*euler_cfg_pp"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(ju.preset("sd15").model_sampling)


@pytest.mark.parametrize("scheduler", quick_subset(ju.SCHEDULERS, 3))
def test_a_new_step_count_compiles_nothing_within_its_bucket(scheduler):
    """Step counts share one program per scheduler and power-of-two length bucket: after the first
    call, 40 more step counts (whole, discarding the penultimate, sliced and divided) compile nothing."""
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiles.append(name) if name.endswith("backend_compile_duration") else None
    )
    ms = ju.preset("sdxl").model_sampling
    ju.unsampler_sigmas(ms, "euler", scheduler, 3, latent_scale_factor=0.13025)
    ju.ksampler_sigmas(ms, "dpm_2", scheduler, 3)
    ju.calculate_sigmas(ms, scheduler, 3)
    before = len(compiles)
    for n in range(20, 60):
        s = ju.unsampler_sigmas(ms, "euler", scheduler, n, 2, n - 1, latent_scale_factor=0.13025)
        ju.ksampler_sigmas(ms, "dpm_2", scheduler, n)
        ju.calculate_sigmas(ms, scheduler, n)
        assert len(s) == n - 3
    assert len(compiles) == before


@pytest.mark.parametrize("family", ["flux-dev", "sd3", "stable-cascade-c"])
def test_kl_optimal_at_many_steps_agrees_with_torch_float32(family):
    """Uniform in atan(sigma), computed live in torch float32 as ComfyUI does: the fractions
    i / (n - 1) must reach exactly 1, or the schedule's smallest sigmas drift (by 4e-5 once)."""
    torch = pytest.importorskip("torch")
    ms = ju.preset(family).model_sampling
    lo, hi = np.arctan(float(ms.sigma_min)), np.arctan(float(ms.sigma_max))
    for n in (1000, 10000):
        a = torch.arange(n, dtype=torch.float32) / (n - 1)
        expected = (a * lo + (1 - a) * hi).tan().numpy()
        got = np.asarray(ju.calculate_sigmas(ms, "kl_optimal", n))
        assert got[-1] == 0.0
        np.testing.assert_allclose(got[:-1], expected, rtol=1e-6)
