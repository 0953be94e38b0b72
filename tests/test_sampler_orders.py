"""The deterministic samplers' orders on the closed-form ODE of Gaussian data, sampling and
inverting, their gradients, and inversion's step from sigma 0 (issue 26; apart from
tests/test_every_sampler.py so that the two files' compiles run on two workers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_subset
from test_every_sampler import DETERMINISTIC, SAMPLERS, latent, run
from test_sampler_contract import den, ode

import jax_unsampler as ju
from jax_unsampler._names import INVERSION_SAMPLERS
from jax_unsampler._steps import SAMPLER_STEPS


@pytest.mark.parametrize("name", quick_subset(DETERMINISTIC, 4))
def test_the_deterministic_samplers_have_finite_gradients(name):
    x = latent()
    if SAMPLER_STEPS[name].fixed_grid or name == "dpm_fast":
        g = jax.grad(lambda x: run(name, x).sum())(x)
    else:  # a lax.while_loop (adaptive steps) has forward-mode derivatives only
        g = jax.jvp(lambda x: run(name, x), (x,), (jnp.ones_like(x),))[1]
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, name


# --- orders on the closed-form ODE --------------------------------------------------------------

# The global error's observed order on geometric sigmas 6 -> 0.1 at 16..128 steps (the same in
# float64: these are the methods', not float32's). One-step methods show their order. A
# multistep method whose first steps are of lower order (Euler's, then order 2, ...) carries
# that warm-up's error, so it is held to 2 (at most its own order), which a first-order slip
# (slope 1) fails. ComfyUI's UniPC lowers its order over its last steps (first order on the
# last: `lower_order_final`), and its observed order here is 1.5 to 1.9; heunpp2's weights do
# not meet the second-order condition (first order); gradient estimation is first order.
ORDERS = {
    "euler": 1, "euler_cfg_pp": 1, "heun": 2, "heunpp2": 1, "dpm_2": 2, "lms": 2, "dpmpp_2m": 2,
    "dpmpp_2m_cfg_pp": 2, "ipndm": 2, "ipndm_v": 2, "deis": 2, "res_multistep": 2,
    "res_multistep_cfg_pp": 2, "gradient_estimation": 1, "gradient_estimation_cfg_pp": 1,
    "ddim": 1, "uni_pc": 1.7, "uni_pc_bh2": 1.7,
}  # fmt: skip
ODE_SAMPLERS = [n for n in SAMPLERS if SAMPLER_STEPS[n].fixed_grid and not SAMPLER_STEPS[n].noise]


COUNTS = np.array([16, 32, 64, 128])


def observed_order(solve, start, exact) -> tuple[float, list[float]]:
    """The slope of the error `|solve(start, n) - exact|` against the step count `n`."""
    errors = [np.abs(np.asarray(solve(start, n), np.float64) - exact).max() for n in COUNTS]
    return -np.polyfit(np.log(COUNTS), np.log(errors), 1)[0], errors


def test_the_order_table_covers_every_deterministic_sampler():
    assert tuple(ORDERS) == tuple(ODE_SAMPLERS)


def check_order(name, order, errors):
    assert ORDERS[name] - 0.3 < order < SAMPLER_STEPS[name].order + 0.5, (name, order, errors)


@pytest.mark.parametrize("name", quick_subset(ODE_SAMPLERS, 3))
def test_sample_converges_at_the_samplers_order(name):
    def solve(x, n):
        sigmas = np.geomspace(6.0, 0.1, n + 1).astype(np.float32)
        return run(name, jnp.asarray(x, jnp.float32), sigmas)

    x = np.asarray(latent((2, 3, 4)), np.float64) * 6
    check_order(name, *observed_order(solve, x, ode(x, 6.0, 0.1)))


@pytest.mark.parametrize("name", quick_subset(INVERSION_SAMPLERS, 3))
def test_inversion_converges_at_the_samplers_order(name):
    """Up the ODE from sigma 0.1 to 6 (the step from sigma 0 is the next test's)."""

    def solve(x, n):
        sigmas = np.geomspace(0.1, 6.0, n + 1).astype(np.float32)
        return ju.inverted_latents(den, jnp.asarray(x, jnp.float32), sigmas, sampler=name)[-x.shape[0] :]

    x = np.asarray(latent((2, 3, 4)), np.float64)
    check_order(name, *observed_order(solve, x, ode(x, 0.1, 6.0)))


@pytest.mark.parametrize("name", [n for n in INVERSION_SAMPLERS if not SAMPLER_STEPS[n].steps_from_zero])
def test_a_step_from_sigma_0_is_eulers_then_the_history_starts(name):
    x = latent()
    sigmas = jnp.concatenate([jnp.array([0.0, 0.02]), jnp.geomspace(0.04, 1.2, 12)])
    out = ju.inverted_latents(den, x, sigmas, sampler=name)
    euler = ju.inverted_latents(den, x, sigmas, sampler="euler")
    assert bool(jnp.all(jnp.isfinite(out)))
    b = x.shape[0]
    np.testing.assert_array_equal(out[: 2 * b], euler[: 2 * b])  # the step from 0 is Euler's
    # From there on the sampler's own steps, its history started afresh: at least as close to
    # the ODE's exact path as Euler's steps (a history read from the zero step's unset state,
    # or an order chosen by the step's index rather than the history's length, is not).
    exact = ode(np.asarray(x, np.float64), 0.0, 1.2)
    err, err_euler = (np.abs(np.asarray(v[-b:], np.float64) - exact).max() for v in (out, euler))
    assert err <= 1.05 * err_euler, (name, err, err_euler)
