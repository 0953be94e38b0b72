"""The one sampler contract (issues 18 and 22): every sampler in every use, one check per rule,
misuse refused, per-item randomness, one dtype rule, denoisers never stale, finite gradients.

Each test here fails on 0.2.0 (073fec6): the behaviour it asserts did not hold there.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_unsampler as ju
from jax_unsampler import _mixing, _samplers

ROOT = Path(__file__).resolve().parents[1]

MU, S = 0.3, 0.8


def den(x, sigma):
    """E[x0 | x] for x0 ~ N(MU, S^2): the closed form every order test compares with."""
    sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return MU + S**2 / (S**2 + sig**2) * (x - MU)


def ode(x, sigma_from, sigma_to):
    """The probability-flow ODE's exact solution for that data: quantiles are kept."""
    return MU + (x - MU) * np.sqrt(S**2 + sigma_to**2) / np.sqrt(S**2 + sigma_from**2)


def _latent(shape=(2, 3, 4, 4), seed=0):
    return jax.random.normal(jax.random.key(seed), shape) * 0.7 + 0.2


SIGMAS = jnp.concatenate([jnp.geomspace(8.0, 0.2, 7), jnp.zeros(1)])


# --- every sampler in every use, at its order ------------------------------------------------


@pytest.mark.parametrize("sampler, order", [("heun", 2), ("dpmpp_2m", 2), ("euler", 1)])
def test_sample_converges_at_the_samplers_order(sampler, order):
    x = np.asarray(_latent((2, 3, 4)), np.float64) * 6
    lo, hi = 0.1, 6.0
    counts = np.array([8, 16, 32, 64])
    errors = []
    for n in counts:
        sigmas = np.geomspace(hi, lo, n + 1).astype(np.float32)
        out = ju.sample(den, jnp.asarray(x, jnp.float32), sigmas, sampler=sampler)
        errors.append(np.abs(np.asarray(out, np.float64) - ode(x, hi, lo)).max())
    slope = np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert abs(slope + order) < 0.3, (sampler, errors, slope)


def test_heun_mixes():
    latent = _latent()
    noised = ju.noised_latents(jax.random.key(1), latent, SIGMAS)
    out = ju.iterative_mixing_sample(den, latent, SIGMAS, noised, sampler="heun")
    euler = ju.iterative_mixing_sample(den, latent, SIGMAS, noised, sampler="euler")
    assert out.shape == latent.shape and bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(out, euler)


# --- misuse refused --------------------------------------------------------------------------


def test_a_batch_in_the_nodes_order_is_refused():
    latent = _latent()
    ascending = SIGMAS[::-1]
    # What batch_unsample / unsampler_sigmas give: least noise first.
    reversed_batch = ju.noised_latents(jax.random.key(1), latent, ascending)
    with pytest.raises(
        ValueError, match=r"^iterative_mixing_sample: noised is in the other order.*noised=None"
    ):
        ju.iterative_mixing_sample(den, latent, SIGMAS, reversed_batch)
    # The inverted batch (ascending) too, and the flipped one is accepted.
    inverted = ju.inverted_latents(den, latent, ascending)
    with pytest.raises(ValueError, match="noised is in the other order"):
        ju.iterative_mixing_sample(den, latent, SIGMAS, inverted)
    n, b = len(SIGMAS), latent.shape[0]
    flipped = inverted.reshape(n, b, *latent.shape[1:])[::-1].reshape(n * b, *latent.shape[1:])
    assert bool(jnp.all(jnp.isfinite(ju.iterative_mixing_sample(den, latent, SIGMAS, flipped))))


def test_noised_none_builds_the_batch_from_key():
    latent = _latent()
    key = jax.random.key(4)
    inside = ju.iterative_mixing_sample(den, latent, SIGMAS, key=key)
    given = ju.iterative_mixing_sample(den, latent, SIGMAS, ju.noised_latents(key, latent, SIGMAS), key=key)
    np.testing.assert_array_equal(inside, given)
    with pytest.raises(ValueError, match=r"iterative_mixing_sample: key is required here \(noised=None"):
        ju.iterative_mixing_sample(den, latent, SIGMAS)


NAN = np.full((1, 2, 3, 3), np.nan, np.float32)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ju.sample(den, x, SIGMAS, sampler="euler"),
        lambda x: ju.iterative_mixing_sample(den, x, SIGMAS, key=jax.random.key(0)),
        lambda x: ju.inverted_latents(den, x, SIGMAS[::-1]),
        lambda x: ju.noised_latents(jax.random.key(0), x, SIGMAS),
    ],
    ids=["sample", "mixing", "inversion", "noise"],
)
@pytest.mark.parametrize("form", ["numpy", "list", "jax"])
@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_a_nan_latent_is_refused_everywhere(call, form, under_jit):
    value = {"numpy": NAN, "list": NAN.tolist(), "jax": jnp.asarray(NAN)}[form]
    run = (lambda: jax.jit(lambda: call(value))()) if under_jit else (lambda: call(value))
    with pytest.raises(ValueError, match="latent.* contains NaN or infinite values"):
        run()


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: ju.inverted_latents(den, _latent(), [14.6, 6.0, 1.0, 0.0]),
            "inverted_latents: sigmas must be ascending",
        ),
        (
            lambda: ju.sample(den, _latent(), np.array([0.0, 1.0, 6.0]), sampler="euler"),
            "sample: sigmas must be descending",
        ),
        (
            lambda: ju.sample(den, _latent(), [3.0, np.inf, 0.0], sampler="euler"),
            "sample: sigmas contain NaN or inf",
        ),
    ],
)
def test_captured_lists_and_numpy_are_checked_under_jit(call, match):
    with pytest.raises(ValueError, match=match):
        jax.jit(call)()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: ju.sample(den, _latent(), s, sampler="euler"),
        lambda s: ju.iterative_mixing_sample(den, _latent(), s, key=jax.random.key(0)),
        lambda s: ju.inverted_latents(den, _latent(), s),
        lambda s: ju.noised_latents(jax.random.key(0), _latent(), s),
    ],
)
def test_integer_sigma_arrays_get_one_answer(call):
    with pytest.raises(ValueError, match=r": sigmas must be floating point, got int"):
        call(np.array([3, 1, 0]))


def test_scalar_sigma_denoiser_error_says_sigma_has_shape_b():
    def scalar_only(x, sigma):
        return x * jnp.ones((2,)) / (1 + sigma)  # (2, 1, 8, 8) * (2,): JAX's broadcasting error

    with pytest.raises(
        ValueError,
        match=r"^sample: the denoiser failed on x of shape \(2, 1, 8, 8\) and sigma of shape \(2,\)",
    ):
        ju.sample(scalar_only, jnp.ones((2, 1, 8, 8)), SIGMAS, sampler="euler")


def test_complex_denoiser_output_is_refused():
    with pytest.raises(
        ValueError, match="sample: denoiser must return a real floating array, got dtype complex64"
    ):
        ju.sample(lambda x, s: x.astype(jnp.complex64), jnp.ones((1, 2)), SIGMAS, sampler="euler")


# --- per-item randomness ---------------------------------------------------------------------


def test_lcm_item_alone_equals_the_item_in_the_batch():
    latent = _latent((3, 2, 4, 4)) * 5
    key = jax.random.key(7)
    batch = ju.sample(den, latent, SIGMAS, sampler="lcm", key=key)
    alone = ju.sample(den, latent[2:3], SIGMAS, sampler="lcm", key=key, batch_index=[2])
    np.testing.assert_allclose(alone, batch[2:3], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler", ["lcm", "dpmpp_2m"])
def test_mixing_item_alone_equals_the_item_in_the_batch_with_rewind(sampler):
    latent = _latent((3, 2, 4, 4))
    key = jax.random.key(7)
    kw = dict(sampler=sampler, rewind=True, rewind_min=0.3, rewind_max=0.9, key=key)
    batch = ju.iterative_mixing_sample(den, latent, SIGMAS, **kw)
    alone = ju.iterative_mixing_sample(den, latent[1:2], SIGMAS, batch_index=[1], **kw)
    np.testing.assert_allclose(alone, batch[1:2], rtol=1e-5, atol=1e-5)


# --- one dtype rule, one latent-space rule ---------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ju.sample(den, x, SIGMAS, sampler="dpmpp_2m"),
        lambda x: ju.iterative_mixing_sample(den, x, SIGMAS, key=jax.random.key(0)),
        lambda x: ju.inverted_latents(den, x, SIGMAS[::-1]),
        lambda x: ju.noised_latents(jax.random.key(0), x, SIGMAS),
        lambda x: ju.blend("slerp", x, x * 0.5 + 1, 0.3),
    ],
)
def test_bfloat16_in_bfloat16_out(call):
    out = call(_latent().astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16


def test_latent_format_in_sample_and_mixing():
    fmt = ju.preset("sd15").latent_format
    latent = _latent((1, 4, 4, 4))
    got = ju.sample(den, latent, SIGMAS, sampler="euler", latent_format=fmt)
    want = fmt.process_out(ju.sample(den, fmt.process_in(latent), SIGMAS, sampler="euler"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    noised = ju.noised_latents(jax.random.key(0), latent, SIGMAS)
    got = ju.iterative_mixing_sample(den, latent, SIGMAS, noised, latent_format=fmt)
    z = fmt.process_in(noised)
    want = fmt.process_out(ju.iterative_mixing_sample(den, fmt.process_in(latent), SIGMAS, z))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- denoisers: parameters traced, never stale -----------------------------------------------


def _compiles(fn):
    """The number of XLA compilations `fn()` triggers."""
    events = []

    def listener(event, duration, **kw):
        if event == "/jax/compilation_cache/compile_requests_use_cache" or event.endswith(
            "backend_compile_duration"
        ):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(events)


def _unet_apply(params, model_input, timestep):
    return jnp.tanh(model_input * params["w"] + params["b"]) * (1 + 0 * timestep.reshape(-1, 1, 1, 1))


def test_new_parameters_through_denoiser_from_model_do_not_recompile():
    ms = ju.model_sampling("EPS")
    x = _latent((1, 2, 4, 4))
    p1 = {"w": jnp.full((2, 4, 4), 0.5), "b": jnp.zeros((2, 4, 4))}
    p2 = {"w": jnp.full((2, 4, 4), 0.9), "b": jnp.ones((2, 4, 4))}
    d1 = ju.denoiser_from_model(_unet_apply, ms, params=p1)
    d2 = ju.denoiser_from_model(_unet_apply, ms, params=p2)
    a = ju.sample(d1, x, SIGMAS, sampler="euler")
    assert _compiles(lambda: ju.sample(d2, x, SIGMAS, sampler="euler").block_until_ready()) == 0
    b = ju.sample(d2, x, SIGMAS, sampler="euler")
    assert not np.allclose(a, b)
    # The partial form (the 0.2.0 docstring's example) reads its parameters at each call too.
    pa = ju.denoiser_from_model(functools.partial(_unet_apply, p1), ms)
    pb = ju.denoiser_from_model(functools.partial(_unet_apply, p2), ms)
    np.testing.assert_allclose(ju.sample(pa, x, SIGMAS, sampler="euler"), a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ju.sample(pb, x, SIGMAS, sampler="euler"), b, rtol=1e-6, atol=1e-6)


class Scaled:
    """A plain (non-pytree) callable object whose array attribute a user reassigns."""

    def __init__(self, w):
        self.w = w

    def __call__(self, x, sigma):
        return den(x, sigma) * self.w


@pytest.mark.parametrize(
    "run",
    [
        lambda d, x: ju.sample(d, x, SIGMAS, sampler="euler"),
        lambda d, x: ju.iterative_mixing_sample(d, x, SIGMAS, key=jax.random.key(0)),
        lambda d, x: ju.inverted_latents(d, x, SIGMAS[::-1]),
    ],
    ids=["sample", "mixing", "inversion"],
)
@pytest.mark.parametrize("form", ["object", "bound_method", "closure"])
def test_a_mutated_denoiser_is_never_run_with_old_values(run, form):
    x = _latent((1, 2, 4, 4))
    obj = Scaled(jnp.float32(1.0))
    state = {"w": jnp.float32(1.0)}

    def closure(x, sigma):
        return den(x, sigma) * w_cell

    w_cell = jnp.float32(1.0)
    d = {"object": obj, "bound_method": obj.__call__, "closure": closure}[form]
    first = run(d, x)
    obj.w = jnp.float32(0.5)
    state["w"] = jnp.float32(0.5)
    w_cell = jnp.float32(0.5)  # noqa: F841 (read by closure)
    d = {"object": obj, "bound_method": obj.__call__, "closure": closure}[form]
    second = run(d, x)
    fresh = run(Scaled(jnp.float32(0.5)), x)
    np.testing.assert_allclose(second, fresh, rtol=1e-6, atol=1e-6)
    assert not np.allclose(first, second)


def test_closures_over_arrays_compile_once_and_hold_no_copies():
    x = _latent((1, 2, 4, 4))
    arrays = [jnp.full((2, 4, 4), 0.1 * k) for k in range(4)]
    make = [lambda v: lambda x, s: den(x, s) + v for _ in range(1)][0]
    ju.sample(make(arrays[0]), x, SIGMAS, sampler="euler")
    size = _samplers._sample_kernel._cache_size()
    outs = [ju.sample(make(a), x, SIGMAS, sampler="euler") for a in arrays[1:]]
    assert _samplers._sample_kernel._cache_size() == size
    assert not np.allclose(outs[0], outs[1])


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ju.sample(den, x, SIGMAS, sampler="dpmpp_2m"),
        lambda x: ju.sample(den, x, SIGMAS, sampler="heun"),
        lambda x: ju.sample(den, x, SIGMAS, sampler="euler"),
        lambda x: ju.iterative_mixing_sample(
            den, x, SIGMAS, x.repeat(len(SIGMAS), 0) * 1.5, sampler="dpmpp_2m"
        ),
        lambda x: ju.inverted_latents(den, x, SIGMAS[::-1], sampler="dpmpp_2m")[-1:],
        lambda x: ju.inverted_latents(den, x, SIGMAS[::-1], sampler="heun")[-1:],
    ],
    ids=[
        "sample-dpmpp_2m",
        "sample-heun",
        "sample-euler",
        "mixing-dpmpp_2m",
        "inversion-dpmpp_2m",
        "inversion-heun",
    ],
)
def test_gradient_equals_a_finite_difference(call):
    x = _latent((1, 1, 2, 2), seed=3)
    f = lambda v: jnp.sum(call(v) ** 2)  # noqa: E731
    g = jax.grad(f)(x)
    assert bool(jnp.all(jnp.isfinite(g)))
    d = jnp.zeros_like(x).at[0, 0, 0, 1].set(1.0)
    h = 1e-2
    fd = (f(x + h * d) - f(x - h * d)) / (2 * h)
    # A central difference on a smooth map: O(h^2) ~ 1e-4 relative; float32 rounding of f ~ 1e-5.
    np.testing.assert_allclose(float(g[0, 0, 0, 1]), float(fd), rtol=2e-3, atol=2e-3)


# --- degenerate schedules --------------------------------------------------------------------


def test_repeated_sigmas_and_zero_steps_stay_finite():
    x = _latent((1, 2, 3, 3))
    sd15 = ju.preset("sd15").model_sampling
    long = ju.calculate_sigmas(sd15, "simple", 2000)  # repeats table entries
    assert bool(jnp.any(long[1:] == long[:-1]))
    assert bool(jnp.all(jnp.isfinite(ju.sample(den, x * 14, long, sampler="dpmpp_2m"))))
    np.testing.assert_array_equal(ju.sample(den, x, [0.0, 0.0], sampler="euler"), x)


def test_rewind_compiles_in_the_time_of_one_pass():
    """200 passes are a loop: the program has the size of one pass (0.2.0 unrolled them:
    quadratic compile time, about 230 passes did not finish in 600 s)."""
    x = _latent((1, 1, 2, 2))
    steps = 400
    sigmas = jnp.concatenate([jnp.geomspace(10.0, 0.05, steps), jnp.zeros(1)])
    ranges = _mixing.rewind_ranges(steps, 0.005, 0.999)
    assert len(ranges) >= 200
    lowered = jax.jit(
        lambda x, s: ju.iterative_mixing_sample(
            den, x, s, rewind=True, rewind_min=0.005, key=jax.random.key(0)
        )
    ).lower(x, sigmas)
    one = jax.jit(lambda x, s: ju.iterative_mixing_sample(den, x, s, key=jax.random.key(0))).lower(x, sigmas)
    # The lowered text of 200+ passes is within a small factor of one pass's (not 200x).
    assert len(lowered.as_text()) < 4 * len(one.as_text())


# --- empty batches and schedule values ---------------------------------------------------------


def test_empty_batches():
    empty = jnp.zeros((0, 4, 2, 2))
    assert ju.blend("slerp", empty, empty, 0.5).shape == (0, 4, 2, 2)
    assert ju.blend("norm_only", empty, empty, 0.5).shape == (0, 4, 2, 2)
    assert ju.iterative_mixing_sample(den, empty, SIGMAS, jnp.zeros((0, 4, 2, 2))).shape == (0, 4, 2, 2)
    assert ju.inverted_latents(den, jnp.zeros((2, 0)), SIGMAS[::-1]).shape == (2 * len(SIGMAS), 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha_1": float("nan")}, "alpha_1 must be a finite number >= 0.0, got nan"),
        ({"alpha_1": -1.0}, "alpha_1 must be a finite number >= 0.0, got -1.0"),
        ({"alpha_1": jnp.ones(3)}, r"alpha_1 must be a scalar, got shape \(3,\)"),
        ({"blend_min": float("nan")}, "blend_min must be a finite number"),
        (
            {"stop_blending_at_pct": 1e9},
            r"stop_blending_at_pct must be a finite number with \|stop_blending_at_pct",
        ),
    ],
)
def test_schedule_values_are_checked(kwargs, match):
    with pytest.raises(ValueError, match="^blending_schedule: " + match):
        ju.blending_schedule("cosine", 10, **{"alpha_1": 2.4, **kwargs})
    with pytest.raises(ValueError, match=match):
        ju.iterative_mixing_sample(
            den, _latent(), SIGMAS, key=jax.random.key(0), **{"alpha_1": 2.4, **kwargs}
        )


def test_a_traced_nan_percentage_gives_nan_not_step_0():
    c1 = jax.jit(lambda p: ju.blending_schedule("linear", 10, alpha_1=1.0, stop_blending_at_pct=p))(jnp.nan)
    assert bool(jnp.all(jnp.isnan(c1)))


def test_a_raw_rbg_key_array_is_refused_with_the_one_message():
    with pytest.raises(ValueError, match="sample: key must be a PRNG key"):
        ju.sample(den, _latent() * 5, SIGMAS, sampler="lcm", key=jnp.zeros((4,), jnp.uint32))


# --- boundaries --------------------------------------------------------------------------------


def test_every_name_table_loads_without_jax():
    names = [n for n in ju.__all__ if n.isupper()]
    code = (
        "import sys, jax_unsampler as ju\n"
        f"for n in {names!r}: getattr(ju, n)\n"
        "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax.'))[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert {"MIXING_SAMPLERS", "BLENDING_SCHEDULES", "BLENDING_FUNCTIONS", "INVERSION_SAMPLERS"} <= set(names)


def test_each_step_formula_exists_once():
    """The step bodies live in _steps.py alone: the loops and the torch functions call them.
    Read as text, so that it runs where torch is not installed (the torch_bridge files too)."""
    files = [ROOT / "jax_unsampler" / f for f in ("_samplers.py", "_mixing.py", "_inversion.py")] + [
        ROOT / "torch_bridge" / f for f in ("_inversion.py", "_mixing.py", "_sampling.py")
    ]
    for path in files:
        source = path.read_text()
        for formula in ("expm1(-h)", "(d + d_2)", "* (s.next - s.sigma)", "(1 - w) * ", "* half"):
            assert formula not in source, (path.name, formula)


def _memory(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis()


def test_inversion_writes_its_trajectory_in_place():
    """XLA's own account of the compiled program: its scratch memory is a few latents, not a
    second trajectory (0.2.0 stacked the states and concatenated them: a copy of the result)."""
    x, s = jnp.ones((1, 4, 32, 32)), jnp.geomspace(0.03, 14.6, 200)
    stats = _memory(lambda x, s: ju.inverted_latents(den, x, s, sampler="dpmpp_2m"), x, s)
    assert stats.temp_size_in_bytes < 10 * x.nbytes < stats.output_size_in_bytes


def test_rewind_holds_no_copy_of_the_noised_batch():
    """Rewind's later passes make their noised entries step by step (0.2.0 drew each pass's
    whole batch: 12.7x the batch at 19 passes)."""
    x = jnp.ones((1, 4, 16, 16))
    s = jnp.concatenate([jnp.geomspace(14.6, 0.03, 200), jnp.zeros(1)])
    z = jnp.ones((201, 4, 16, 16))

    def run(x, s, z):
        return ju.iterative_mixing_sample(den, x, s, z, rewind=True, rewind_min=0.3, key=jax.random.key(0))

    stats = _memory(run, x, s, z)
    assert stats.temp_size_in_bytes < 12 * x.nbytes < z.nbytes
