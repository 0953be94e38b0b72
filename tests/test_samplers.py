"""ju.sample against ComfyUI's own sample_euler / sample_dpmpp_2m / sample_lcm (recorded)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_subset
from mixing_toys import gaussian_denoiser, recorded, toy

import jax_unsampler as ju
from jax_unsampler._sampling import Noise, Run, integrate

CASES = recorded("sampler")


def _close(got, expected):
    """Within 1e-4 of the latent's scale (float32 rounding over up to 30 steps)."""
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "case", quick_subset(CASES, 3, ids=[f"{r['sampler']}-{r['toy']}-{r['steps']}" for r, _ in CASES])
)
def test_matches_comfyui(case, jit):
    r, a = case
    den = toy(r["toy"], a["mu"])
    if r["sampler"] == "lcm":  # torch's noise, drawn as sample_lcm draws it, fed in by step

        def run(x, s, n):
            lcm = Run("sample", "lcm")
            return integrate(
                lcm, den, jnp.asarray(x), jnp.asarray(s), noise=Noise(steps=jnp.asarray(n)[None, :, None])
            )

        got = (jax.jit(run) if jit else run)(a["x"], a["sigmas"], a["noise"])
    else:
        run = lambda x, s: ju.sample(den, x, s, sampler=r["sampler"])  # noqa: E731
        got = (jax.jit(run) if jit else run)(a["x"], a["sigmas"])
    _close(got, a["out"])


def test_lcm_keyed_noise_is_per_step_and_scaled():
    # One step from sigma 2 to 1 with a denoiser returning 0: x = 1 * eps, eps ~ N(0, 1).
    x = jnp.zeros((4, 8, 16, 16))
    out = ju.sample(
        lambda x, s: jnp.zeros_like(x), x, jnp.array([2.0, 1.0]), sampler="lcm", key=jax.random.key(0)
    )
    # 4096 draws: the sample std is within 5% of 1 (its standard error is 1/sqrt(2*4096) ~ 1.1%).
    assert abs(float(jnp.std(out)) - 1.0) < 0.05
    const = ju.sample(
        lambda x, s: jnp.ones_like(x), x, jnp.array([2.0, 0.25]), sampler="lcm", key=jax.random.key(0),
        noise_scaling="const",
    )  # fmt: skip
    np.testing.assert_allclose(const, 0.75 + (out / 1.0) * 0.25, rtol=1e-5, atol=1e-6)


def test_no_recompile_for_new_values():
    den = gaussian_denoiser(jnp.zeros((3, 4, 4)))
    run = jax.jit(lambda x, s: ju.sample(den, x, s, sampler="dpmpp_2m"))
    x = jnp.ones((1, 3, 4, 4))
    run(x, jnp.array([3.0, 1.0, 0.0]))
    before = run._cache_size()
    run(x * 2, jnp.array([5.0, 2.0, 0.0]))
    assert run._cache_size() == before


def test_any_rank_and_batch():
    den = gaussian_denoiser(0.0)
    s = jnp.array([4.0, 1.0, 0.0])
    for shape in [(3, 5), (2, 4, 6), (2, 4, 3, 5, 5)]:
        x = jnp.ones(shape)
        out = ju.sample(den, x, s, sampler="euler")
        assert out.shape == shape
        # Per item: each batch item alone gives the same.
        np.testing.assert_allclose(out[1:], ju.sample(den, x[1:], s, sampler="euler"), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampler": "dpm_3"}, "sample: unknown sampler 'dpm_3'.*valid choices: euler, euler_cfg_pp, "),
        ({"sampler": "euler", "sigmas": [0.0, 1.0]}, "sample: sigmas must be descending"),
        ({"sampler": "euler", "sigmas": [1.0]}, "sample: sigmas must be 1-D with at least 2"),
        (
            {"sampler": "lcm"},
            r"sample: key is required here \(sampler 'lcm' draws fresh noise; or pass noise=\): pass key=",
        ),
        ({"sampler": "lcm", "key": 3}, r"sample: key must be a PRNG key, got the int 3; pass jax.random.key"),
        ({"sampler": "euler", "noise_scaling": "flow"}, "sample: unknown noise_scaling 'flow'"),
        (
            {"sampler": "euler", "denoiser": lambda x, s: x[:1]},
            r"sample: denoiser must return an array of the latent's shape \(2, 3\), got \(1, 3\)",
        ),
        (
            {"sampler": "euler", "latent_or_noise": jnp.ones(3)},
            r"sample: latent_or_noise must have a batch axis and at least 1 more \(rank >= 2\)",
        ),
    ],
)
def test_bad_input(kwargs, match):
    args = {"denoiser": lambda x, s: x, "latent_or_noise": jnp.ones((2, 3)), "sigmas": [2.0, 1.0, 0.0]}
    args.update(kwargs)
    with pytest.raises(_raised(match), match=match):
        ju.sample(args.pop("denoiser"), args.pop("latent_or_noise"), args.pop("sigmas"), **args)


def test_eager_call_is_one_kernel_and_pytree_parameters_are_traced():
    """`sample` runs one jitted kernel; a `jax.tree_util.Partial` denoiser's new parameter values
    reuse it (and are used)."""
    from jax_unsampler import _samplers

    def gauss(mu, x, sigma):
        return gaussian_denoiser(mu)(x, sigma)

    x = jax.random.normal(jax.random.key(0), (2, 3, 4))
    sigmas = jnp.array([4.0, 1.0, 0.3, 0.0])
    a = ju.sample(jax.tree_util.Partial(gauss, jnp.float32(0.1)), x, sigmas, sampler="dpmpp_2m")
    size = _samplers._sample_kernel._cache_size()
    b = ju.sample(jax.tree_util.Partial(gauss, jnp.float32(0.6)), x * 2, sigmas * 0.5, sampler="dpmpp_2m")
    assert _samplers._sample_kernel._cache_size() == size
    closure = ju.sample(gaussian_denoiser(jnp.float32(0.6)), x * 2, sigmas * 0.5, sampler="dpmpp_2m")
    np.testing.assert_allclose(np.asarray(b), np.asarray(closure), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(a), np.asarray(b))


def _raised(match):
    """What the wrong thing raises: a TypeError for what is not a key (as jax.random), else ValueError."""
    return TypeError if "must be a PRNG key" in match else ValueError
