"""Iterative mixing against the original ComfyUI-Iterative-Mixer's code (recorded by
tools/record_iterative_mixer.py), plus bad input, jit and any batch and rank."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_subset
from mixing_toys import gaussian_denoiser, recorded, toy

import jax_unsampler as ju
from jax_unsampler._mixing import check_mixing, mix, noise_tables, rewind_ranges

SCHEDULES = recorded("schedule")
BLENDS = recorded("blend")
MIXES = recorded("mix")


def _sched_kwargs(r):
    return dict(
        alpha_1=r["alpha_1"],
        start_blending_at_pct=r["start"],
        stop_blending_at_pct=r["stop"],
        clamp_blending_at_pct=r["clamp"],
        blend_min=r["blend_min"],
        blend_max=r["blend_max"],
    )


@pytest.mark.parametrize(
    "case", quick_subset(SCHEDULES, 6, ids=[f"{r['name']}-{r['steps']}-{r['i']}" for r, _ in SCHEDULES])
)
def test_schedule_matches_original(case):
    r, a = case
    if r["name"] == "logistic" and r["steps"] == 1:  # the original raises (ValueError or NameError)
        assert r["error"]
        with pytest.raises(ValueError, match="blending_schedule: the logistic schedule needs steps >= 2"):
            ju.blending_schedule(r["name"], r["steps"], **_sched_kwargs(r))
        return
    got = np.asarray(ju.blending_schedule(r["name"], r["steps"], **_sched_kwargs(r)))
    if r["error"]:  # NameError in the original's logistic with stop step 0: we use `steps`, as linear
        assert r["name"] == "logistic" and int((r["stop"] or 1) * r["steps"]) == 0
        assert got.shape == (r["steps"],) and np.all(np.isfinite(got))
        return
    expected = a["c1"].astype(np.float64)
    if r["name"] == "cosine" and r["stop"] is not None and int(r["stop"] * r["steps"]) == 0:
        # The original divides by stop = 0 (NaN at step 0); ours means `steps` there, as linear
        # (docs/mixing.md): the closed form with stop = steps, clamped and mapped as the original.
        clamped = r["clamp"] is not None and int(r["clamp"] * r["steps"]) == 0
        assert clamped or np.isnan(expected[0])  # a clamp at step 0 hides the original's NaN
        t, n = np.arange(r["steps"]), r["steps"]
        expected = (0.5 * (1 + np.cos(np.pi * (n - t) / n))) ** r["alpha_1"]
        if r["clamp"] is not None:
            expected[int(r["clamp"] * n) :] = 1.0
        expected = r["blend_min"] + expected * (r["blend_max"] - r["blend_min"])
    tol = np.full_like(expected, 1e-6)
    if r["name"] == "cosine":
        # torch's float32 cos is up to an ulp (6e-8) off where XLA's is correctly rounded; the
        # cosine schedule `f^alpha_1` (f = (1 + cos)/2) magnifies an error d in f to
        # alpha_1 c1 d / f, which exceeds 1e-6 for alpha_1 < 1 near f = 0: allow for it.
        span = r["blend_max"] - r["blend_min"]
        raw = np.clip((expected - r["blend_min"]) / span, 0, 1)
        f = np.maximum(raw ** (1 / r["alpha_1"]), 1e-30)
        tol += 2 * r["alpha_1"] * raw * 6e-8 / f * span
    bad = ~(np.abs(got - expected) <= tol) & ~(np.isnan(got) & np.isnan(expected))
    assert not bad.any(), (got[bad], expected[bad])


def test_schedule_traced_percentages_agree_away_from_integers():
    f = jax.jit(
        lambda a, p, q, c: ju.blending_schedule(
            "logistic",
            20,
            alpha_1=a,
            start_blending_at_pct=p,
            stop_blending_at_pct=q,
            clamp_blending_at_pct=c,
        )
    )
    np.testing.assert_allclose(
        f(2.0, 0.12, 0.83, 0.92),
        ju.blending_schedule(
            "logistic",
            20,
            alpha_1=2.0,
            start_blending_at_pct=0.12,
            stop_blending_at_pct=0.83,
            clamp_blending_at_pct=0.92,
        ),
        atol=1e-6,
    )


@pytest.mark.parametrize("case", BLENDS, ids=[f"{r['name']}-{r['weight']}" for r, _ in BLENDS])
def test_blend_matches_original(case):
    r, a = case
    got = ju.blend(r["name"], a["l1"], a["l2"], r["weight"])
    np.testing.assert_allclose(got, a["out"], rtol=1e-5, atol=1e-5)


def test_blend_per_item():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    for name in ju.BLENDING_FUNCTIONS:
        both = ju.blend(name, a, b, jnp.array([0.2, 0.7]))
        np.testing.assert_allclose(both[1:], ju.blend(name, a[1:], b[1:], 0.7), rtol=1e-5, atol=1e-6)


def _noise_from_draws(r, a):
    """The original's draws, per pass: (rewind eps, LCM per-step table), in the order it drew."""
    steps, o = r["steps"], r["options"]
    ranges = rewind_ranges(steps, o["rewind_min"], o["rewind_max"]) if o.get("rewind") else [(0, steps)]
    sigmas = a["sigmas"]
    draws = [a[f"draw{k}"] for k in range(r["draws"])]
    k, out = 0, []
    for p, (start, _) in enumerate(ranges):
        eps = None
        if p:
            eps = draws[k]
        k += 1  # pass 0's draw made `noised`
        table = None
        if r["sampler"] == "lcm":
            table = np.zeros((steps - start, 1, *a["latent"].shape), np.float32)  # one draw a step
            for i in range(steps - start):
                if sigmas[start + i + 1] > 0:
                    table[i, 0] = draws[k]
                    k += 1
        out.append((eps, table))
    assert k == len(draws)
    return ranges, out


def _run_recorded(r, a, jit):
    o = r["options"]
    kwargs = {
        k: o[k]
        for k in (
            "alpha_1",
            "start_blending_at_pct",
            "stop_blending_at_pct",
            "clamp_blending_at_pct",
            "blend_min",
            "blend_max",
        )
        if k in o
    }
    den = toy(r["toy"], a["mu"])
    ranges, noise = _noise_from_draws(r, a)

    m = check_mixing(
        "test", den, a["latent"], a["sigmas"], a["noised"], sampler=r["sampler"],
        blending_schedule=o["blending_schedule"], blending_function=o["blending_function"],
        rewind=bool(o.get("rewind", False)), rewind_min=o.get("rewind_min", 0.0),
        rewind_max=o.get("rewind_max", 0.999), normalize_on_mean=bool(o.get("normalize_on_mean", False)),
    )  # fmt: skip
    assert m.ranges == ranges
    tables = noise_tables(noise, ranges, r["steps"], a["latent"].shape)
    starts = jnp.asarray([start for start, _ in ranges], jnp.int32)

    def run(latent, sigmas, noised, tables):
        c1 = ju.blending_schedule(o["blending_schedule"], r["steps"], **kwargs)
        return mix(m.run, den, latent, sigmas, noised, c1, tables, starts, bool(o.get("normalize_on_mean")))

    args = (jnp.asarray(a["latent"]), jnp.asarray(a["sigmas"]), jnp.asarray(a["noised"]), tables)
    return jax.jit(run)(*args) if jit else run(*args)


def _close(got, expected):
    """The issue's bar: within 1e-4 relative to the latent's scale (its largest magnitude)."""
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-4 * scale)


# Every recorded case eagerly; under the user's jit every other one (the program is the same
# jitted kernel either way: the jit cases check the tracing path, and half of them cover every
# sampler and option kind, at half the compilations).
def _mix_id(r: dict, jit: bool) -> str:
    return f"{r['i']}-{r['sampler']}-{r['toy']}-{r['steps']}-{'jit' if jit else 'eager'}"


_MIX_RUNS = [(c, jit) for i, c in enumerate(MIXES) for jit in ((False, True) if i % 2 == 0 else (False,))]


@pytest.mark.parametrize(
    ("case", "jit"),
    quick_subset(_MIX_RUNS, 20, unpack=True, ids=[_mix_id(r, j) for (r, _), j in _MIX_RUNS]),
)
def test_mixing_matches_original(case, jit):
    r, a = case
    _close(_run_recorded(r, a, jit), a["out"])


@pytest.mark.parametrize("case", [c for c in MIXES if c[0]["draws"] == 1][:6], ids=lambda c: str(c[0]["i"]))
def test_public_function_matches_original(case):
    r, a = case
    o = dict(r["options"])
    got = ju.iterative_mixing_sample(
        toy(r["toy"], a["mu"]), a["latent"], a["sigmas"], a["noised"], sampler=r["sampler"], **o
    )
    _close(got, a["out"])


def test_recorded_cases_cover_the_issue():
    opts = [(r["sampler"], r["options"]) for r, _ in MIXES]
    for sampler in ("euler", "dpmpp_2m"):
        for sched in ju.BLENDING_SCHEDULES:
            for func in ju.BLENDING_FUNCTIONS:
                assert any(
                    s == sampler and o["blending_schedule"] == sched and o["blending_function"] == func
                    for s, o in opts
                )
    alphas = {o["alpha_1"] for _, o in opts}
    assert min(alphas) <= 0.1 and max(alphas) >= 10
    steps = {r["steps"] for r, _ in MIXES}
    assert min(steps) == 1 and max(steps) == 50
    assert any(o.get("rewind") for _, o in opts) and any(s == "lcm" for s, _ in opts)


# --- keyed noise, batches, ranks, jit ---------------------------------------------------------


def _setup(shape=(1, 4, 8, 8), steps=6, seed=0):
    sigmas = jnp.concatenate([jnp.geomspace(10.0, 0.1, steps), jnp.zeros(1)])
    latent = jax.random.normal(jax.random.key(seed), shape) * 0.5
    noised = ju.noised_latents(jax.random.key(seed + 1), latent, sigmas)
    return gaussian_denoiser(jnp.zeros(shape[1:])), latent, sigmas, noised


_SHAPES = [(2, 3, 2, 5, 5), (3, 7), (2, 4, 9), (2, 4, 6, 6)]
# Every sampler with one shape, the shapes in turn (each shape meets several samplers of each
# family): the per-item rule is the loop's, not a sampler's, so the full product (4x the
# compilations, minutes of CI) would test nothing more.
_SAMPLER_SHAPES = [(name, _SHAPES[i % len(_SHAPES)]) for i, name in enumerate(ju.MIXING_SAMPLERS)]


@pytest.mark.parametrize(
    ("sampler", "shape"),
    quick_subset(_SAMPLER_SHAPES, 3, ids=[f"{n}-{len(s)}d" for n, s in _SAMPLER_SHAPES], unpack=True),
)
def test_any_batch_and_rank_is_per_item(shape, sampler):
    den, latent, sigmas, noised = _setup(shape)
    key = jax.random.key(3)
    ms = ju.preset("sd15").model_sampling  # sa_solver reads its tau interval from it
    out = ju.iterative_mixing_sample(
        den,
        latent,
        sigmas,
        noised,
        sampler=sampler,
        blending_function="norm_only",
        key=key,
        model_sampling=ms,
    )
    assert out.shape == shape and bool(jnp.all(jnp.isfinite(out)))
    # Every draw is per item (LCM's included): item 1 alone, with its index, equals item 1.
    per_step = noised.reshape(len(sigmas), shape[0], *shape[1:])
    one = ju.iterative_mixing_sample(
        den, latent[1:2], sigmas, per_step[:, 1], sampler=sampler, blending_function="norm_only",
        key=key, batch_index=[1], model_sampling=ms,
    )  # fmt: skip
    np.testing.assert_allclose(out[1:2], one, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # many keyed draws: a statistical check, about 7 s
def test_lcm_and_rewind_noise_statistics():
    # A denoiser returning 0 and c1 = 0 everywhere (blend_max=0): LCM's result is exactly
    # z'[last step] blended out (0) plus sigmas[-2] * eps... with sigmas ending in 0 the last
    # step adds nothing, so look at the step before: run with sigmas ending above 0.
    shape = (2, 4, 32, 32)
    zero = lambda x, s: jnp.zeros_like(x)  # noqa: E731
    sigmas = jnp.array([3.0, 2.0, 0.5])
    latent = jnp.zeros(shape)
    noised = jnp.zeros((3 * 2, *shape[1:]))
    out = ju.iterative_mixing_sample(
        zero, latent, sigmas, noised, sampler="lcm", blend_max=0.0, key=jax.random.key(0)
    )
    # out = 0.5 * eps: std 0.5 within 3% (8192 draws: standard error of the std ~0.8%).
    assert abs(float(jnp.std(out)) / 0.5 - 1) < 0.03
    # Rewind: each later pass draws a fresh batch; with 12 steps and (0.5, 0.8) the passes
    # start at 0, 6 and 9 (the original's geometric ranges).
    assert rewind_ranges(12, 0.5, 0.8) == [(0, 12), (6, 12), (9, 12)]
    den, latent, sigmas, noised = _setup(steps=12)
    a = ju.iterative_mixing_sample(
        den, latent, sigmas, noised, rewind=True, rewind_min=0.5, rewind_max=0.8, key=jax.random.key(1)
    )
    b = ju.iterative_mixing_sample(
        den, latent, sigmas, noised, rewind=True, rewind_min=0.5, rewind_max=0.8, key=jax.random.key(2)
    )
    plain = ju.iterative_mixing_sample(den, latent, sigmas, noised)
    assert not np.allclose(a, b) and not np.allclose(a, plain)
    # rewind_min = 0 gives one pass (the original's geometric_ranges stops at once): no key needed.
    np.testing.assert_array_equal(ju.iterative_mixing_sample(den, latent, sigmas, noised, rewind=True), plain)


def test_jit_whole_call_no_recompile():
    den, latent, sigmas, noised = _setup()
    names = (
        "sampler",
        "blending_schedule",
        "blending_function",
        "rewind",
        "rewind_min",
        "rewind_max",
        "normalize_on_mean",
    )
    f = jax.jit(lambda *a, **k: ju.iterative_mixing_sample(den, *a, **k), static_argnames=names)
    kw = dict(sampler="dpmpp_2m", blending_schedule="logistic", blending_function="norm_only")
    out1 = f(latent, sigmas, noised, alpha_1=2.0, stop_blending_at_pct=0.7, blend_min=0.1, **kw)
    np.testing.assert_allclose(
        out1,
        ju.iterative_mixing_sample(
            den, latent, sigmas, noised, alpha_1=2.0, stop_blending_at_pct=0.7, blend_min=0.1, **kw
        ),
        rtol=1e-5,
        atol=1e-5,
    )
    size = f._cache_size()
    f(latent * 2, sigmas * 0.5, noised, alpha_1=3.0, stop_blending_at_pct=0.6, blend_min=0.2, **kw)
    assert f._cache_size() == size


@pytest.mark.slow  # rewind passes and LCM draws: several programs to compile
def test_jit_lcm_with_rewind_no_recompile():
    den, latent, sigmas, noised = _setup()
    names = ("sampler", "rewind", "rewind_min")
    g = jax.jit(lambda *a, **k: ju.iterative_mixing_sample(den, *a, **k), static_argnames=names)
    g(latent, sigmas, noised, sampler="lcm", rewind=True, rewind_min=0.5, key=jax.random.key(0))
    size = g._cache_size()
    g(latent, sigmas, noised, sampler="lcm", rewind=True, rewind_min=0.5, key=jax.random.key(5))
    assert g._cache_size() == size


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampler": "dpm_fast"}, "unknown sampler 'dpm_fast'.*valid choices: euler, euler_cfg_pp, "),
        ({"blending_schedule": "cos"}, "unknown blending_schedule 'cos'.*cosine, linear, logistic"),
        ({"blending_function": "add"}, "unknown blending_function 'add'.*addition, slerp, norm_only"),
        (
            {"noised": jnp.zeros((6, 4, 8, 8))},
            r"noised must have shape \(len\(sigmas\) \* B, ...\) = \(7, 4, 8, 8\)",
        ),
        ({"sigmas": jnp.array([0.0, 1, 2, 3, 4, 5, 6])}, "sigmas must be descending"),
        (
            {"denoiser": lambda x, s: x[..., :2]},
            r"denoiser must return an array of the latent's shape \(1, 4, 8, 8\), got \(1, 4, 8, 2\)",
        ),
        ({"rewind": True, "rewind_min": 0.8, "rewind_max": 0.5}, "rewind_min must be less than rewind_max"),
        ({"rewind_min": 0.5, "rewind_max": 0.5}, "rewind_min must be less than rewind_max"),
        ({"rewind_max": 1.5}, r"rewind_max must be in \[0, 1\]"),
        ({"sampler": "lcm"}, "key is required here .sampler 'lcm' draws fresh noise"),
        ({"rewind": True, "rewind_min": 0.5}, "key is required here .rewind draws fresh noised batches"),
        ({"sampler": "lcm", "key": "seed"}, "key must be a PRNG key .*got str"),
        (
            {"normalize_on_mean": True, "latent": jnp.zeros((1, 4)), "noised": jnp.zeros((7, 4))},
            "normalize_on_mean .* at least 3 dimensions",
        ),
        (
            {
                "blending_schedule": "logistic",
                "sigmas": jnp.array([1.0, 0.0]),
                "noised": jnp.zeros((2, 4, 8, 8)),
            },
            "the logistic blending schedule needs at least 2 steps",
        ),
    ],
)
def test_bad_input(kwargs, match):
    den, latent, sigmas, noised = _setup()
    args = {"denoiser": den, "latent": latent, "sigmas": sigmas, "noised": noised, **kwargs}
    with pytest.raises(_raised(match), match="iterative_mixing_sample: " + match):
        ju.iterative_mixing_sample(
            args.pop("denoiser"), args.pop("latent"), args.pop("sigmas"), args.pop("noised"), **args
        )


def test_blend_and_schedule_bad_input():
    with pytest.raises(ValueError, match="blending_schedule: unknown name 'tanh'.*cosine, linear, logistic"):
        ju.blending_schedule("tanh", 5, alpha_1=1.0)
    with pytest.raises(ValueError, match=r"blending_schedule: steps must be an integer in \[1"):
        ju.blending_schedule("cosine", 0, alpha_1=1.0)
    with pytest.raises(ValueError, match="blend: unknown name 'lerp'"):
        ju.blend("lerp", jnp.ones((1, 2)), jnp.ones((1, 2)), 0.5)
    with pytest.raises(ValueError, match="blend: noised and x must have one shape"):
        ju.blend("addition", jnp.ones((1, 2)), jnp.ones((1, 3)), 0.5)
    with pytest.raises(ValueError, match=r"blend: weight must be a scalar or of shape \(1,\)"):
        ju.blend("addition", jnp.ones((1, 2)), jnp.ones((1, 2)), jnp.ones(3))


def test_eager_call_is_one_kernel_and_pytree_parameters_are_traced():
    """An eager call runs one jitted kernel; a `jax.tree_util.Partial` denoiser's new parameter
    values reuse it (and are used), as do new values of the latent, sigmas and settings."""
    from jax_unsampler import _mixing

    def gauss(mu, x, sigma):
        return gaussian_denoiser(mu)(x, sigma)

    _, latent, sigmas, noised = _setup()
    run = lambda mu, **kw: ju.iterative_mixing_sample(  # noqa: E731
        jax.tree_util.Partial(gauss, jnp.float32(mu)), latent, sigmas, noised, sampler="dpmpp_2m", **kw
    )
    a = run(0.1, alpha_1=2.0)
    size = _mixing.mixing_kernel._cache_size()
    b = run(0.7, alpha_1=3.0)
    assert _mixing.mixing_kernel._cache_size() == size
    closure = ju.iterative_mixing_sample(
        gaussian_denoiser(jnp.float32(0.7)), latent, sigmas, noised, sampler="dpmpp_2m", alpha_1=3.0
    )
    np.testing.assert_allclose(np.asarray(b), np.asarray(closure), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(a), np.asarray(b))


def _raised(match):
    """What the wrong thing raises: a TypeError for what is not a key (as jax.random), else ValueError."""
    return TypeError if "must be a PRNG key" in match else ValueError
