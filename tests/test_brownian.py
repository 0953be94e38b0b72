"""`brownian_noise`: one Brownian path per item (diffrax's VirtualBrownianTree), the SDE
samplers' noise that stays consistent when the step count changes."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_unsampler as ju

pytest.importorskip("diffrax")

MS = ju.preset("sd15").model_sampling
SIGMAS = jnp.asarray(ju.calculate_sigmas(MS, "karras", 8))


def den(x, sigma):
    sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return 0.3 + 0.64 / (0.64 + sig**2) * (x - 0.3)


def test_an_interval_is_standard_normal_and_disjoint_intervals_are_independent():
    x = jnp.zeros((2, 4, 32, 32))
    noise = ju.brownian_noise(jax.random.key(0), x, SIGMAS)
    a, b = np.asarray(noise(SIGMAS[2], SIGMAS[3])), np.asarray(noise(SIGMAS[3], SIGMAS[4]))
    # 8192 independent elements: the sample mean's standard error is 1/sqrt(8192) = 0.011 and the
    # sample std's about 0.008, so 0.05 is over 4 standard errors; so is the correlation bound.
    for v in (a, b):
        assert abs(v.mean()) < 0.05 and abs(v.std() - 1) < 0.05
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05


def test_an_intervals_increment_is_the_sum_of_its_halves():
    x = jnp.zeros((2, 3, 4))
    noise = ju.brownian_noise(jax.random.key(1), x, SIGMAS)
    a, b, c = SIGMAS[1], SIGMAS[2], SIGMAS[3]
    whole = noise(a, c) * jnp.sqrt(a - c)
    halves = noise(a, b) * jnp.sqrt(a - b) + noise(b, c) * jnp.sqrt(b - c)
    np.testing.assert_allclose(whole, halves, rtol=1e-5, atol=1e-5)
    # The direction counts: the increment from sigma_next back to sigma is its negative.
    np.testing.assert_allclose(noise(c, a), -noise(a, c), rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(noise(a, a)).max()) == 0.0


def test_each_item_has_its_own_path():
    x = jnp.zeros((3, 2, 5))
    noise = ju.brownian_noise(jax.random.key(2), x, SIGMAS, batch_index=[7, 0, 3])
    alone = ju.brownian_noise(jax.random.key(2), x[:1], SIGMAS, batch_index=[7])
    np.testing.assert_array_equal(noise(SIGMAS[0], SIGMAS[1])[:1], alone(SIGMAS[0], SIGMAS[1]))
    assert float(jnp.abs(noise(SIGMAS[0], SIGMAS[1])[1] - noise(SIGMAS[0], SIGMAS[1])[2]).max()) > 0.1


def test_an_sde_sampler_with_it_stays_close_when_the_step_count_doubles():
    """With keyed noise every step count draws other noise; along one Brownian path the
    sampler converges, so 12 and 24 steps land much closer together."""
    x = jax.random.normal(jax.random.key(3), (2, 4, 8, 8)) * 14.6
    gaps = {}
    for kind in ("keyed", "brownian"):
        outs = []
        for n in (12, 24):
            sigmas = jnp.asarray(ju.calculate_sigmas(MS, "karras", n))
            noise = ju.brownian_noise(jax.random.key(4), x, sigmas) if kind == "brownian" else None
            outs.append(
                jax.jit(
                    lambda x, s, noise=noise: ju.sample(
                        den, x, s, sampler="dpmpp_2m_sde", key=jax.random.key(4), noise=noise
                    )
                )(x, sigmas)
            )
        gaps[kind] = float(jnp.abs(outs[0] - outs[1]).mean())
    assert gaps["brownian"] < 0.5 * gaps["keyed"], gaps


def test_bad_input_is_one_line():
    x = jnp.zeros((1, 2, 3))
    with pytest.raises(ValueError, match=r"^brownian_noise: tol must be a Python float in \(0, 1\), got 2"):
        ju.brownian_noise(jax.random.key(0), x, SIGMAS, tol=2)
    with pytest.raises(ValueError, match=r"^brownian_noise: sigmas must be descending"):
        ju.brownian_noise(jax.random.key(0), x, SIGMAS[::-1])


def test_without_diffrax_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffrax", None)
    with pytest.raises(ImportError, match=r"^brownian_noise: needs diffrax .*jax-unsampler\[brownian\]"):
        ju.brownian_noise(jax.random.key(0), jnp.zeros((1, 2)), SIGMAS)
