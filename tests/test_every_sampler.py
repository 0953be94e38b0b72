"""Every sampler of the registry in every use (issue 26): the name tables are the registry's;
each runs eagerly, under `jit` and under `vmap` alike; the deterministic ones have finite
gradients and converge at their order on the closed-form ODE of Gaussian data, sampling and
inverting; options, `noise=`, `model_sampling=` and `save=` do what they say; the keyed
default noise keeps its bits. ComfyUI parity is tests/test_samplers_comfyui.py's."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_subset
from test_sampler_contract import den  # the closed-form denoiser and ODE of Gaussian data

import jax_unsampler as ju
from jax_unsampler._names import INVERSION_SAMPLERS, MIXING_SAMPLERS, SAMPLE_SAMPLERS, SAMPLERS
from jax_unsampler._steps import SAMPLER_STEPS

ROOT = Path(__file__).resolve().parents[1]
MS = ju.preset("sd15").model_sampling  # sa_solver reads its tau interval from it
SIGMAS = jnp.asarray(ju.calculate_sigmas(MS, "karras", 6))
DETERMINISTIC = [n for n in SAMPLERS if not SAMPLER_STEPS[n].noise]
RANDOM = [n for n in SAMPLERS if SAMPLER_STEPS[n].noise]


def latent(shape=(2, 3, 4, 4), seed=0):
    return jax.random.normal(jax.random.key(seed), shape) * 0.7 + 0.2


def run(name, x, sigmas=SIGMAS, **kw):
    kw.setdefault("key", jax.random.key(0) if SAMPLER_STEPS[name].noise else None)
    return ju.sample(den, x, sigmas, sampler=name, model_sampling=MS, **kw)


# --- the tables ---------------------------------------------------------------------------------


def test_the_name_tables_are_the_registrys():
    assert SAMPLE_SAMPLERS == SAMPLERS and set(SAMPLER_STEPS) == set(SAMPLERS)
    assert len(SAMPLERS) == 42  # ComfyUI a125cd84's comfy.samplers.SAMPLER_NAMES
    assert MIXING_SAMPLERS == tuple(n for n in SAMPLERS if SAMPLER_STEPS[n].fixed_grid)
    assert INVERSION_SAMPLERS == tuple(
        n
        for n in SAMPLERS
        if SAMPLER_STEPS[n].fixed_grid and not SAMPLER_STEPS[n].noise and SAMPLER_STEPS[n].invertible
    )
    assert len(INVERSION_SAMPLERS) >= 12
    for name, spec in SAMPLER_STEPS.items():
        assert spec.family in ("ODE", "ancestral", "SDE", "multistep"), name
        assert spec.calls >= 1 and spec.order >= 1, name
        assert (spec.solve is None) == spec.fixed_grid, name


# --- every sampler, eagerly, under jit and vmap -------------------------------------------------


@pytest.mark.parametrize("name", quick_subset(SAMPLERS, 4))
def test_every_sampler_runs_under_jit_and_vmap(name):
    x = latent()
    eager = run(name, x)
    assert eager.shape == x.shape and eager.dtype == x.dtype and bool(jnp.all(jnp.isfinite(eager)))
    xs = jnp.stack([x, latent(seed=1)])
    mapped = jax.jit(jax.vmap(lambda x: run(name, x)))(xs)  # under jit and vmap at once
    np.testing.assert_allclose(mapped[0], eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mapped[1], run(name, xs[1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", quick_subset(SAMPLERS, 3))
def test_the_program_does_not_grow_with_the_step_count(name):
    """Compile time flat in the number of steps: the traced program for 12 steps and for 48 is
    the same program (the steps are one loop), but for the sigmas' length in its shapes."""
    x = latent()

    def equations(jaxpr) -> int:  # every equation, those of the loops' bodies and branches too
        inner = [v for p in (e.params.values() for e in jaxpr.eqns) for v in p]
        subs = [getattr(v, "jaxpr", v) for v in inner for v in (v if isinstance(v, tuple) else (v,))]
        return len(jaxpr.eqns) + sum(equations(j) for j in subs if hasattr(j, "eqns"))

    def program(steps: int) -> int:
        sigmas = jnp.asarray(ju.calculate_sigmas(MS, "karras", steps))
        return equations(jax.make_jaxpr(lambda x, s: run(name, x, s))(x, sigmas).jaxpr)

    assert program(12) == program(48), name


# --- options, noise, model sampling, save ---------------------------------------------------------


@pytest.mark.parametrize(
    "ancestral, ode_sampler",
    [
        ("euler_ancestral", "euler"),
        ("dpm_2_ancestral", "dpm_2"),
        ("res_multistep_ancestral", "res_multistep"),
    ],
)
def test_eta_0_makes_an_ancestral_sampler_its_ode_sampler(ancestral, ode_sampler):
    x = latent()
    got = run(ancestral, x, options={"eta": 0.0})
    np.testing.assert_allclose(got, run(ode_sampler, x), rtol=2e-6, atol=2e-6)
    assert float(jnp.abs(run(ancestral, x) - got).max()) > 1e-2  # eta 1 is another path


def test_options_are_refused_by_name_and_type():
    x = latent()
    with pytest.raises(
        ValueError,
        match=r"^sample: sampler 'euler_ancestral' has no option 'etta'; its options: eta, s_noise$",
    ):
        run("euler_ancestral", x, options={"etta": 1.0})
    with pytest.raises(ValueError, match=r"^sample: sampler 'euler' has no option 'eta'; its options: "):
        run("euler", x, options={"eta": 1.0})
    with pytest.raises(ValueError, match=r"^sample: euler_ancestral option 'eta' must be a Python float"):
        run("euler_ancestral", x, options={"eta": jnp.float32(1.0)})
    # Values outside those ComfyUI's function runs, before anything is traced:
    with pytest.raises(
        ValueError, match=r"^sample: ipndm option 'max_order' must be an int from 2 to 4, got 5$"
    ):
        run("ipndm", x, options={"max_order": 5})
    with pytest.raises(
        ValueError, match=r"^sample: deis option 'deis_mode' must be one of 'tab', got 'rhoab'$"
    ):
        run("deis", x, options={"deis_mode": "rhoab"})
    with pytest.raises(
        ValueError, match=r"^inverted_latents: lms option 'order' must be an int from 1 to 16"
    ):
        ju.inverted_latents(den, x, SIGMAS[::-1], sampler="lms", options={"order": 0})


@pytest.mark.parametrize("name", quick_subset(RANDOM, 4))
def test_noise_replaces_the_key_and_is_what_the_sampler_draws(name):
    x = latent()
    calls = []

    def noise(sigma, sigma_next):
        calls.append((sigma, sigma_next))
        return jnp.zeros_like(x)

    with_noise = ju.sample(den, x, SIGMAS, sampler=name, noise=noise, model_sampling=MS)
    assert calls and bool(jnp.all(jnp.isfinite(with_noise)))
    keyed = run(name, x)
    assert float(jnp.abs(keyed - with_noise).max()) > 1e-3  # the key's noise is not zeros


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "uni_pc"])
def test_noise_is_accepted_and_unused_by_a_deterministic_sampler(name):
    x = latent()
    noise = lambda s, t: jnp.ones_like(x)  # noqa: E731
    np.testing.assert_array_equal(run(name, x, noise=noise), run(name, x))


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_a_sampler_that_reads_the_model_sampling_asks_for_it_in_one_line(under_jit):
    x = latent()

    def call(x):
        return ju.sample(den, x, SIGMAS, sampler="sa_solver", key=jax.random.key(0))

    with pytest.raises(
        ValueError, match=r"^sample: sampler 'sa_solver' reads the model's sampling .*pass model_sampling="
    ):
        (jax.jit(call) if under_jit else call)(x)


def test_save_trajectory_is_every_steps_state():
    x = latent()
    out = run("dpmpp_2m", x, save="trajectory")
    assert out.shape == (SIGMAS.shape[0] * x.shape[0], *x.shape[1:])
    np.testing.assert_array_equal(out[: x.shape[0]], x)
    np.testing.assert_array_equal(out[-x.shape[0] :], run("dpmpp_2m", x))
    # Entry k is the state at sigmas[k]: where a run along the first k steps ends.
    for k in (1, 3):
        np.testing.assert_allclose(
            out[k * x.shape[0] : (k + 1) * x.shape[0]],
            run("dpmpp_2m", x, SIGMAS[: k + 1]),
            rtol=1e-6,
            atol=1e-6,
        )


def test_the_keyed_default_noise_keeps_its_bits():
    """Draw 0 of step i, item b: `normal(fold_in(fold_in(fold_in(fold_in(key, 0), 1), i), b))`.
    LCM with a denoiser returning 0 on sigmas ending above 0 returns draw 0 of its last step
    times that step's next sigma: the path written out here, not the loop's code."""
    key = jax.random.key(5)
    x = jnp.zeros((3, 2, 4))
    zero = lambda x, s: jnp.zeros_like(x)  # noqa: E731
    sigmas = jnp.array([3.0, 2.0, 0.5])
    out = ju.sample(zero, x, sigmas, sampler="lcm", key=key, batch_index=[4, 0, 9])
    step = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 0), 1), 1)
    for row, b in zip(out, [4, 0, 9], strict=True):
        np.testing.assert_array_equal(row, 0.5 * jax.random.normal(jax.random.fold_in(step, b), (2, 4)))
    # A step's later draws fold the draw's number in too: pinned bits (users keep their seeds).
    two = ju.sample(den, latent(), SIGMAS, sampler="dpmpp_sde", key=jax.random.key(0), model_sampling=MS)
    digest = hashlib.sha256(np.asarray(two).tobytes()).hexdigest()[:16]
    assert digest == PINNED_DPMPP_SDE, digest


PINNED_DPMPP_SDE = "4526fd5a7e75cf14"


def test_float64_latents_are_computed_in_float64():
    """With x64 on, heun's error keeps falling as 1/steps^2 past float32's rounding floor."""
    code = textwrap.dedent(
        """
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np, jax_unsampler as ju
        MU, S = 0.3, 0.8
        def den(x, sigma):
            sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
            return MU + S**2 / (S**2 + sig**2) * (x - MU)
        x = np.linspace(-2.0, 2.0, 24).reshape(2, 3, 4)
        exact = MU + (x - MU) * np.sqrt(S**2 + 0.01) / np.sqrt(S**2 + 36.0)
        errs = []
        for n in (1024, 2048):
            out = ju.sample(den, jnp.asarray(x), np.geomspace(6.0, 0.1, n + 1), sampler="heun")
            assert out.dtype == jnp.float64, out.dtype
            errs.append(np.abs(np.asarray(out) - exact).max())
        ratio = errs[0] / errs[1]
        assert 3.6 < ratio < 4.4, (errs, ratio)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
