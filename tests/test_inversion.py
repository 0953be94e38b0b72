"""`inverted_latents`: the recurrence, the ODE it solves (convergence at each solver's order),
the sigma-0 rule, model space, layouts, dtypes, compilation and bad input.

The denoisers here are written in the tests: the exact denoiser of Gaussian data, whose
probability-flow ODE has a closed-form solution, and a non-linear one for the recurrence.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_subset

import jax_unsampler as ju
from jax_unsampler import _inversion


def gaussian_denoiser(mu, s):
    """E[x0 | x] for x0 ~ N(mu, s^2) elementwise and x = x0 + sigma * eps: the exact denoiser."""

    def denoise(x, sigma):
        sig2 = jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1)) ** 2
        return mu + s**2 / (s**2 + sig2) * (x - mu)

    return denoise


def gaussian_ode(x0, mu, s, sigma0, sigma):
    """The probability-flow ODE's solution for Gaussian data, from `x0` at `sigma0`, in float64."""
    return mu + (x0 - mu) * np.sqrt((s**2 + sigma**2) / (s**2 + sigma0**2))


def wavy(x, sigma):
    """A non-linear denoiser (no closed form): exercises the recurrence itself."""
    sig = jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1))
    return jnp.tanh(x) / (1 + sig**2) + 0.1 * jnp.sin(3 * x) * sig / (1 + sig)


def wavy_np(x, sigma):
    return np.tanh(x) / (1 + sigma**2) + 0.1 * np.sin(3 * x) * sigma / (1 + sigma)


def stiff(x, sigma):
    """A denoiser whose slope `(1 + 1e-3 / sigma) sin(3x)` depends strongly on where a step from
    sigma 0 evaluates it (11 sin(3x) at 1e-4, 2 sin(3x) at 1e-3, infinite at 0)."""
    return x - (jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1)) + 1e-3) * jnp.sin(3 * x)


def stiff_np(x, sigma):
    return x - (sigma + 1e-3) * np.sin(3 * x)


def recurrence_np(x, sigmas, solver, denoiser=wavy_np, zero=ju.INVERSION_ZERO_SIGMA):
    """The issue's formulas, step by step in float64 NumPy, with the documented sigma-0 rule."""
    x = np.asarray(x, np.float64)
    out = [x]
    for a, b in zip(sigmas[:-1], sigmas[1:], strict=True):
        if a == b:
            out.append(x)
            continue

        def slope(y, s):
            s = zero if s == 0 else s
            return (y - denoiser(y, s)) / s

        d = slope(x, a)
        if solver == "euler":
            x = x + (b - a) * d
        else:
            x = x + (b - a) * (d + slope(x + (b - a) * d, b)) / 2
        out.append(x)
    return np.concatenate(out)


def _latent(shape=(2, 4, 5, 6), seed=0):
    return jax.random.normal(jax.random.key(seed), shape) * 0.8 + 0.3


SIGMAS = np.array([0.03, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 14.6], np.float32)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_trajectory_is_the_recurrence(solver):
    x = _latent()
    z = ju.inverted_latents(wavy, x, SIGMAS, sampler=solver)
    chex.assert_shape(z, (len(SIGMAS) * 2, 4, 5, 6))
    expected = recurrence_np(np.asarray(x), SIGMAS.astype(np.float64), solver)
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_array_equal(np.asarray(z[:2]), np.asarray(x))  # entry 0: the latent itself


def test_denoiser_sees_k_diffusion_arguments():
    """A `(B,)` float32 sigma equal to the step's sigma, and float32 latents of the latent's shape."""
    seen = []

    def spy(x, sigma):
        assert sigma.shape == (3,) and sigma.dtype == jnp.float32 and x.dtype == jnp.float32
        jax.debug.callback(lambda s: seen.append(np.asarray(s)), sigma)
        return jnp.zeros_like(x)

    ju.inverted_latents(spy, _latent((3, 2, 4)), [0.5, 1.0, 2.0], sampler="heun")
    jax.effects_barrier()
    np.testing.assert_array_equal(np.stack(seen), [[0.5] * 3, [1.0] * 3, [1.0] * 3, [2.0] * 3])


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_gaussian_converges_at_the_solvers_order(solver, order):
    """Error at the top sigma against the closed form, for 4 step counts: it must fall as
    steps^-order (the fitted slope within 0.25 of the order) and keep falling at each doubling."""
    mu, s = 0.4, 0.7
    x = _latent((2, 3, 4), seed=1)
    lo, hi = 0.1, 5.0
    exact = gaussian_ode(np.asarray(x, np.float64), mu, s, lo, hi)
    counts = np.array([4, 8, 16, 32])
    errors = []
    for n in counts:
        sigmas = np.geomspace(lo, hi, n + 1).astype(np.float32)
        z = ju.inverted_latents(gaussian_denoiser(mu, s), x, sigmas, sampler=solver)
        errors.append(np.abs(np.asarray(z[-2:], np.float64) - exact).max())
    errors = np.array(errors)
    slope = np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert abs(slope + order) < 0.25, (solver, errors, slope)
    assert np.all(np.diff(errors) < 0), errors


@pytest.mark.parametrize("solver", quick_subset(["heun", "euler"], 2))  # Euler: the recurrence test
def test_every_entry_is_near_the_ode_state(solver):
    mu, s = -0.2, 1.3
    x = _latent((1, 2, 3, 3), seed=2)
    sigmas = np.geomspace(0.05, 10.0, 201).astype(np.float32)
    z = np.asarray(ju.inverted_latents(gaussian_denoiser(mu, s), x, sigmas, sampler=solver), np.float64)
    exact = gaussian_ode(
        np.asarray(x, np.float64)[None], mu, s, 0.05, sigmas.astype(np.float64)[:, None, None, None, None]
    )
    # 200 steps: Euler's global error is ~1e-2 relative here, Heun's ~1e-5 (float32 limits it).
    tol = 3e-2 if solver == "euler" else 1e-4
    np.testing.assert_allclose(z.reshape(exact.shape), exact, rtol=tol, atol=tol)


@pytest.mark.parametrize("solver, sampler, order", [("euler", "euler", 1), ("heun", "dpmpp_2m", 2)])
def test_round_trip_through_sample(solver, sampler, order):
    """The top entry, sampled back down the same sigmas by `ju.sample` with a deterministic
    sampler of the same order, returns to the latent up to the solvers' error: the error falls
    at least as steps^-order."""
    mu, s = 0.2, 0.6
    x = _latent((2, 3, 4), seed=9)
    counts = np.array([8, 16, 32, 64])
    errors = []
    for n in counts:
        sigmas = np.geomspace(0.05, 8.0, n + 1).astype(np.float32)
        top = ju.inverted_latents(gaussian_denoiser(mu, s), x, sigmas, sampler=solver)[-2:]
        back = ju.sample(gaussian_denoiser(mu, s), top, sigmas[::-1], sampler=sampler)
        errors.append(np.abs(np.asarray(back, np.float64) - np.asarray(x, np.float64)).max())
    slope = np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert slope < -order + 0.3, (solver, sampler, errors, slope)
    assert errors[-1] < (0.1 if order == 1 else 1e-3), errors


class TestModelMode:
    """`denoiser_from_model` + `latent_format`: the ODE in the model's space, LATENTs out.

    The network is the exact prediction for Gaussian data N(MU, S^2) in model space, for an EPS
    model (SD1.5: input x / sqrt(sigma^2 + 1), denoised x - sigma * out) and a flow model (SD3:
    x_sigma = (1 - sigma) x0 + sigma eps, input x, denoised x - sigma * out). The ODE maps
    quantiles, so its solution is `mean(sigma) + (x - mean(sigma0)) * std(sigma) / std(sigma0)`.
    """

    MU, S = 0.3, 0.7

    def network(self, family):
        ms = ju.preset(family).model_sampling
        mu, s = self.MU, self.S

        def apply_fn(model_input, timestep):
            # The network sees the timestep: SD1.5's is an index into its table (ms.sigma inverts
            # it); SD3's is 1000 sigma (its ms.sigma would apply the shift a second time).
            sigma = ms.sigma(timestep) if family == "sd15" else timestep / 1000
            sigma = sigma.reshape((-1,) + (1,) * (model_input.ndim - 1))
            if family == "sd15":
                x = model_input * jnp.sqrt(sigma**2 + 1)
                denoised = mu + s**2 / (s**2 + sigma**2) * (x - mu)
            else:
                x, a = model_input, 1 - sigma
                denoised = mu + a * s**2 / (a**2 * s**2 + sigma**2) * (x - a * mu)
            return (x - denoised) / sigma

        return ju.denoiser_from_model(apply_fn, ms)

    def moments(self, family, sigma):
        if family == "sd15":
            return self.MU, np.sqrt(self.S**2 + sigma**2)
        return (1 - sigma) * self.MU, np.sqrt((1 - sigma) ** 2 * self.S**2 + sigma**2)

    @pytest.mark.parametrize("family", ["sd15", "sd3"])
    def test_follows_the_ode_in_model_space(self, family):
        preset = ju.preset(family)
        fmt = preset.latent_format
        x = _latent((1, preset.latent_channels, 4, 4), seed=11)
        errors = []
        for steps in (10, 40):
            sigmas = ju.unsampler_sigmas(preset.model_sampling, "euler", "karras", steps)
            z = ju.inverted_latents(self.network(family), x, sigmas, sampler="heun", latent_format=fmt)
            sig = np.asarray(sigmas, np.float64)[:, None, None, None, None]
            x0 = np.asarray(fmt.process_in(x), np.float64)[None]
            mean, std = self.moments(family, sig)
            mean0, std0 = self.moments(family, sig[:1])
            exact = np.asarray(
                fmt.process_out(jnp.asarray(mean + (x0 - mean0) * std / std0).reshape(-1, *x.shape[1:]))
            )
            np.testing.assert_array_equal(np.asarray(z[:1]), np.asarray(x))  # entry 0: the latent itself
            errors.append(np.abs(np.asarray(z) - exact).max() / np.abs(exact).max())
        # Heun: 4x the steps, ~16x less error (at least 6x here); and close at 40 steps (karras
        # steps are long at the top, 1.8 -> 14.6 for SD1.5 at 40 steps).
        assert errors[1] < errors[0] / 6 and errors[1] < 5e-3, errors

    def test_model_parameters_do_not_recompile(self):
        """`denoiser_from_model` is a pytree: a new model sampling table reuses the kernel."""
        preset = ju.preset("sd15")
        sigmas = ju.unsampler_sigmas(preset.model_sampling, "euler", "karras", 6)
        x = _latent((1, 4, 2, 2))
        apply_fn = lambda v, t: v * 0.1  # noqa: E731
        ju.inverted_latents(ju.denoiser_from_model(apply_fn, preset.model_sampling), x, sigmas)
        size = _inversion._inverted._cache_size()
        other = ju.model_sampling("EPS", {"linear_end": 0.02})
        ju.inverted_latents(ju.denoiser_from_model(apply_fn, other), x, sigmas)
        assert _inversion._inverted._cache_size() == size


class TestSigmaZero:
    """A first sigma of 0: the step's slope is taken at INVERSION_ZERO_SIGMA, the step keeps its length."""

    @pytest.mark.parametrize("solver", ["euler", "heun"])
    def test_is_the_documented_rule(self, solver):
        x = _latent((1, 3, 4))
        sigmas = np.array([0.0, 0.0, 0.2, 1.0], np.float32)  # a repeated 0 is a step of length 0
        z = ju.inverted_latents(stiff, x, sigmas, sampler=solver)
        assert np.all(np.isfinite(np.asarray(z)))
        expected = recurrence_np(np.asarray(x), sigmas.astype(np.float64), solver, stiff_np)
        # float32: x - D(x, 1e-4) is off by an ulp of x (~1.2e-7 |x|), amplified by 1/1e-4 and
        # the step 0.2: 2.4e-4 |x| (|x| < 3 here). A slope taken anywhere else differs by > 0.1.
        np.testing.assert_allclose(np.asarray(z), expected, rtol=0, atol=1e-3)
        elsewhere = recurrence_np(np.asarray(x), sigmas.astype(np.float64), solver, stiff_np, zero=1e-3)
        assert np.abs(np.asarray(z) - elsewhere).max() > 0.1

    @pytest.mark.parametrize("solver, tol", [("euler", 2e-4), ("heun", 1e-6)])
    def test_first_step_from_zero_follows_the_ode(self, solver, tol):
        """For Gaussian data the ODE leaves sigma 0 flat, so the first step, 0 -> 0.01, lands on
        the closed form: Euler's one-step error is h^2/2 |x''| ~ 1e-4 |x - mu| here, Heun's ~1e-8."""
        mu, s = 0.3, 0.9
        x = _latent((2, 5), seed=3)
        z = ju.inverted_latents(gaussian_denoiser(mu, s), x, [0.0, 0.01, 0.02], sampler=solver)
        exact = gaussian_ode(np.asarray(x, np.float64), mu, s, 0.0, 0.01)
        np.testing.assert_allclose(np.asarray(z[2:4]), exact, rtol=0, atol=tol)

    def test_no_denoiser_call_at_zero(self):
        seen = []

        def spy(x, sigma):
            jax.debug.callback(lambda s: seen.append(float(s[0])), sigma)
            return x * 0.5

        ju.inverted_latents(spy, _latent((1, 2)), [0.0, 1.0])
        jax.effects_barrier()
        assert seen == [pytest.approx(ju.INVERSION_ZERO_SIGMA)]


def test_repeated_sigmas_skip_the_denoiser():
    calls = []

    def spy(x, sigma):
        jax.debug.callback(lambda: calls.append(1))
        return wavy(x, sigma)

    x = _latent((1, 2, 3))
    z = ju.inverted_latents(spy, x, [0.5, 0.5, 1.0, 1.0, 2.0])
    jax.effects_barrier()
    assert len(calls) == 2
    z = np.asarray(z).reshape(5, 1, 2, 3)
    np.testing.assert_array_equal(z[1], z[0])
    np.testing.assert_array_equal(z[3], z[2])


@pytest.mark.parametrize("shape", quick_subset([(2, 16, 3, 4, 4), (1, 4, 8, 8), (3, 64, 10), (2, 7)], 2))
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_any_batch_and_rank(shape, solver):
    x = _latent(shape)
    z = ju.inverted_latents(gaussian_denoiser(0.1, 0.8), x, SIGMAS[:4], sampler=solver)
    chex.assert_shape(z, (4 * shape[0], *shape[1:]))
    # Items are independent: the first item alone gives the same trajectory.
    alone = ju.inverted_latents(gaussian_denoiser(0.1, 0.8), x[:1], SIGMAS[:4], sampler=solver)
    np.testing.assert_allclose(
        np.asarray(z).reshape(4, shape[0], *shape[1:])[:, :1], np.asarray(alone).reshape(4, 1, *shape[1:]),
        rtol=1e-6, atol=1e-6,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    x = _latent((2, 3, 4)).astype(dtype)
    z = ju.inverted_latents(wavy, x, SIGMAS, sampler="heun")
    assert z.dtype == dtype
    ref = ju.inverted_latents(wavy, x.astype(jnp.float32), SIGMAS, sampler="heun")
    # Rounded once at the end: equal to the float32 result rounded to the dtype.
    np.testing.assert_array_equal(np.asarray(z), np.asarray(ref.astype(dtype)))


def test_empty_and_single_sigma():
    x = _latent((2, 3))
    chex.assert_shape(ju.inverted_latents(wavy, x, np.zeros((0,), np.float32)), (0, 3))
    np.testing.assert_array_equal(np.asarray(ju.inverted_latents(wavy, x, [0.7])), np.asarray(x))


class TestModelSpace:
    FMT = ju.LatentFormat(name="test", scale_factor=0.5, shift_factor=0.2)

    @pytest.mark.parametrize("solver", ["euler", "heun"])
    def test_runs_in_model_space_and_returns_latents(self, solver):
        x = _latent((1, 3, 4))
        z = ju.inverted_latents(wavy, x, SIGMAS, sampler=solver, latent_format=self.FMT)
        inner = recurrence_np((np.asarray(x, np.float64) - 0.2) * 0.5, SIGMAS.astype(np.float64), solver)
        expected = inner / 0.5 + 0.2
        expected[:1] = np.asarray(x)
        np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-5, atol=1e-5)

    def test_per_channel_statistics(self):
        fmt = ju.LatentFormat(
            name="stats", scale_factor=1.0, latents_mean=(0.1, -0.3), latents_std=(2.0, 0.5)
        )
        x = _latent((2, 2, 3))
        z = ju.inverted_latents(gaussian_denoiser(0.0, 1.0), x, [0.1, 1.0, 3.0], latent_format=fmt)
        m = np.array([0.1, -0.3])[None, :, None]
        sd = np.array([2.0, 0.5])[None, :, None]
        inner = (np.asarray(x, np.float64) - m) / sd
        euler1 = inner + 0.9 * (0.1 / 1.01) * inner
        euler2 = euler1 + 2.0 * (1.0 / 2.0) * euler1
        np.testing.assert_allclose(np.asarray(z[2:4]), euler1 * sd + m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(z[4:6]), euler2 * sd + m, rtol=1e-5, atol=1e-6)


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree(self):
        x = _latent()
        for solver in ("euler", "heun"):  # the recurrences recurrence_np writes out
            fn = self.variant(functools.partial(ju.inverted_latents, wavy, sampler=solver))
            ref = recurrence_np(np.asarray(x), SIGMAS.astype(np.float64), solver)
            np.testing.assert_allclose(np.asarray(fn(x, SIGMAS)), ref, rtol=1e-5, atol=1e-4)


def test_new_values_do_not_recompile():
    x = _latent()
    ju.inverted_latents(wavy, x, SIGMAS, sampler="heun")
    size = _inversion._inverted._cache_size()
    ju.inverted_latents(wavy, x * 2 - 1, SIGMAS * 1.5, sampler="heun")
    ju.inverted_latents(wavy, _latent(seed=7), np.sort(SIGMAS[::-1] / 3), sampler="heun")
    assert _inversion._inverted._cache_size() == size


def test_pytree_denoiser_parameters_are_traced():
    """A `jax.tree_util.Partial` over arrays: new parameter values reuse the compiled kernel."""

    def gauss(mu, s, x, sigma):
        return gaussian_denoiser(mu, s)(x, sigma)

    x = _latent((1, 3))
    a = ju.inverted_latents(jax.tree_util.Partial(gauss, jnp.float32(0.1), jnp.float32(0.5)), x, SIGMAS)
    size = _inversion._inverted._cache_size()
    b = ju.inverted_latents(jax.tree_util.Partial(gauss, jnp.float32(0.4), jnp.float32(1.5)), x, SIGMAS)
    assert _inversion._inverted._cache_size() == size
    closure = ju.inverted_latents(gaussian_denoiser(0.4, 1.5), x, SIGMAS)  # the new values were used
    np.testing.assert_allclose(np.asarray(b), np.asarray(closure), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(a), np.asarray(b))


class TestBadInput:
    def test_unknown_solver(self):
        with pytest.raises(
            ValueError,
            match=r"inverted_latents: unknown sampler 'huen'.*'heun'.*euler, euler_cfg_pp, heun, dpm_2, ",
        ):
            ju.inverted_latents(wavy, _latent(), SIGMAS, sampler="huen")

    def test_solver_is_the_deprecated_spelling_of_sampler(self):
        with pytest.warns(
            DeprecationWarning, match=r"inverted_latents: the argument solver= is now sampler="
        ):
            old = ju.inverted_latents(wavy, _latent(), SIGMAS, solver="heun")
        np.testing.assert_array_equal(old, ju.inverted_latents(wavy, _latent(), SIGMAS, sampler="heun"))

    def test_descending_sigmas(self):
        with pytest.raises(ValueError, match=r"inverted_latents: sigmas must be ascending .* index 1"):
            ju.inverted_latents(wavy, _latent(), SIGMAS[::-1])

    def test_negative_sigmas(self):
        with pytest.raises(ValueError, match=r"inverted_latents: sigmas must be non-negative"):
            ju.inverted_latents(wavy, _latent(), [-0.1, 0.5])

    def test_sigmas_not_1d(self):
        with pytest.raises(ValueError, match=r"inverted_latents: sigmas must be 1-D"):
            ju.inverted_latents(wavy, _latent(), SIGMAS[None])

    def test_denoiser_of_wrong_output_shape(self):
        with pytest.raises(
            ValueError, match=r"inverted_latents: denoiser must return .* \(2, 4, 5, 6\), got \(2, 4\)"
        ):
            ju.inverted_latents(lambda x, s: x[:, :, 0, 0], _latent(), SIGMAS)

    def test_denoiser_not_callable(self):
        with pytest.raises(TypeError, match=r"inverted_latents: denoiser must be callable"):
            ju.inverted_latents("euler", _latent(), SIGMAS)

    def test_latent_rank(self):
        with pytest.raises(ValueError, match=r"inverted_latents: latent must have a batch axis"):
            ju.inverted_latents(wavy, jnp.zeros((4,)), SIGMAS)

    def test_latent_format_type(self):
        with pytest.raises(ValueError, match=r"inverted_latents: latent_format must be a LatentFormat"):
            ju.inverted_latents(wavy, _latent(), SIGMAS, latent_format="sd15")
