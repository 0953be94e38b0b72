"""Regression tests of issue #29's hostile probe (round 4)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_unsampler as ju

ROOT = Path(__file__).resolve().parents[1]


def half(x, s):
    return x * 0.5


@pytest.mark.parametrize("sigmas", [[14.6, 0.0], [0.0, 0.0]])
@pytest.mark.parametrize("with_key", [False, True])
def test_one_step_lcm_is_the_denoised_latent(sigmas, with_key):
    lat = jnp.ones((1, 4, 4, 4))
    key = jax.random.key(0) if with_key else None
    out = ju.sample(half, lat, jnp.array(sigmas), sampler="lcm", key=key)
    np.testing.assert_allclose(out, 0.5 * lat)


def test_one_step_lcm_mixing():
    lat = jnp.ones((1, 4, 4, 4))
    s = jnp.array([14.6, 0.0])
    noised = ju.noised_latents(jax.random.key(1), lat, s)
    out = ju.iterative_mixing_sample(half, lat, s, noised, sampler="lcm")
    assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("name", ["linear", "logistic"])
def test_reversed_blending_window_refused(name):
    msg = r"start_blending_at_pct=0.9 and stop_blending_at_pct=0.1"
    with pytest.raises(ValueError, match="blending_schedule: .*" + msg):
        ju.blending_schedule(name, 3, alpha_1=2.4, start_blending_at_pct=0.9, stop_blending_at_pct=0.1)
    lat = jnp.ones((1, 4, 4, 4))
    s = jnp.array([3.0, 1.0, 0.5, 0.0])
    kw = dict(blending_schedule=name, start_blending_at_pct=0.9, stop_blending_at_pct=0.1)
    with pytest.raises(ValueError, match="iterative_mixing_sample: .*" + msg):
        ju.iterative_mixing_sample(half, lat, s, key=jax.random.key(0), **kw)


@pytest.mark.parametrize("start, stop", [(0.9, 0.1), (0.0, 0.0), (None, 0.0)])
def test_cosine_stop_at_step_0_means_steps(start, stop):
    # The probe's [nan, 1, 1]: int(0.1 * 3) = 0 divides by 0 in the original. Stop 0 means
    # `steps`, as for linear: the schedule of stop=None, finite.
    kw = dict(alpha_1=2.4, start_blending_at_pct=start)
    got = ju.blending_schedule("cosine", 3, stop_blending_at_pct=stop, **kw)
    expected = [(0.5 * (1 + np.cos(np.pi * (3 - t) / 3))) ** 2.4 for t in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    traced = jax.jit(lambda p: ju.blending_schedule("cosine", 3, stop_blending_at_pct=p, **kw))(stop)
    np.testing.assert_allclose(traced, expected, rtol=1e-6, atol=1e-7)
    lat = jnp.ones((1, 4, 4, 4))
    s = jnp.array([3.0, 1.0, 0.5, 0.0])
    kw = dict(start_blending_at_pct=start, stop_blending_at_pct=stop)
    out = ju.iterative_mixing_sample(half, lat, s, key=jax.random.key(0), **kw)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_slerp_of_parallel_latents_is_the_linear_blend():
    a = np.ones((2, 4, 3, 3), np.float32)
    out = np.asarray(ju.blend("slerp", a, 2 * a, 0.25))
    np.testing.assert_allclose(out, 1.25 * a, rtol=1e-6)


def test_normalize_on_mean_of_one_value_per_channel_refused():
    lat = jnp.ones((1, 4, 1, 1))
    s = jnp.array([3.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"normalize_on_mean .*\(1, 4, 1, 1\)"):
        ju.iterative_mixing_sample(half, lat, s, key=jax.random.key(0), normalize_on_mean=True)


def test_a_correct_batch_of_a_tiny_latent_is_never_refused():
    # The probe: a (1, 4, 1, 1) latent's correctly laid-out batch was refused for 13 of 300
    # keys (P(F(4, 4) < 1/8) = 3.4%); below 64 elements the order is not looked at.
    lat = jnp.full((1, 4, 1, 1), 0.3)
    s = jnp.array([3.0, 1.0, 0.0])
    for k in range(300):
        noised = ju.noised_latents(jax.random.key(k), lat, s)
        ju.iterative_mixing_sample(half, lat, s, noised)  # raises if refused


def test_a_reversed_batch_of_64_elements_is_still_refused():
    lat = jnp.full((1, 4, 4, 4), 0.3)
    s = jnp.array([3.0, 1.0, 0.0])
    reversed_batch = ju.noised_latents(jax.random.key(0), lat, s[::-1])
    with pytest.raises(ValueError, match="noised is in the other order"):
        ju.iterative_mixing_sample(half, lat, s, reversed_batch)


@pytest.mark.parametrize("scheduler, steps", [("beta", 1000), ("ddim_uniform", 1000)])
def test_unsampler_sigmas_may_start_at_0_as_documented(scheduler, steps):
    # As ComfyUI's: at 1000+ steps these schedules' sigmas hold a 0 before the final one, so the
    # unsampled batch's first entry is the latent itself; docs/conventions.md says so.
    z = np.asarray(ju.unsampler_sigmas(ju.preset("sd15").model_sampling, "euler", scheduler, steps))
    assert z[0] == 0.0 and np.all(z[1:] > 0) and np.all(np.diff(z) >= 0)
    assert "no 0" not in (ROOT / "docs" / "conventions.md").read_text()


def test_docs_code_blocks_wrap_and_max_steps_is_explained():
    # Code blocks wider than the column hid comments behind scrollbars: the site's stylesheet
    # wraps them. The API page showed `end_at_step: int = MAX_STEPS` without saying what it is.
    config = (ROOT / "mkdocs.yml").read_text()
    assert "stylesheets/extra.css" in config
    assert "white-space: pre-wrap" in (ROOT / "docs" / "stylesheets" / "extra.css").read_text()
    assert ju.MAX_STEPS == 10000
    for f in (ju.unsampler_sigmas, ju.batch_unsample):
        doc = " ".join((f.__doc__ or "").split())
        assert "MAX_STEPS` (10000" in doc and "whole schedule" in doc, f.__name__


def test_a_nan_denoiser_gives_nan_never_a_finite_number():
    # docs/denoisers.md: NaN from the denoiser reaches the result (no silently finite number).
    lat = jnp.ones((1, 4, 4, 4))
    s = jnp.array([3.0, 1.0, 0.0])

    def nan_at_low_sigma(x, sigma):
        return jnp.where(sigma.reshape(-1, 1, 1, 1) < 2.0, jnp.nan, 0.5 * x)

    for sampler in ("euler", "dpmpp_2m", "euler_ancestral"):
        out = ju.sample(nan_at_low_sigma, lat, s, sampler=sampler, key=jax.random.key(0))
        assert bool(jnp.all(jnp.isnan(out))), sampler
    mixed = ju.iterative_mixing_sample(nan_at_low_sigma, lat, s, key=jax.random.key(0))
    assert bool(jnp.all(jnp.isnan(mixed)))
    inv = ju.inverted_latents(nan_at_low_sigma, lat, jnp.array([0.0, 1.0, 3.0]))
    assert bool(jnp.all(jnp.isnan(inv[-1])))
