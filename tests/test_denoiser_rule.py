"""The denoiser rule (jax_unsampler/_denoiser_args.py, docs/denoisers.md): every value a
denoiser reads is read at every call, or the call is refused in one line — in `sample`,
`iterative_mixing_sample` and `inverted_latents`, eagerly and under the caller's `jit`.

Each case of the round-4 probe (issue 27's table) is one parametrisation: a denoiser, a change
made between two calls, and the check that the second call sees the change (its result equals
a fresh denoiser built with the new value, and differs from the first). On c07643b, whose
mechanism walked Python objects, every one of them gave the first call's result again.
"""

from __future__ import annotations

import dataclasses
import gc
import types
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_unsampler as ju

X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
DOWN = np.array([4.0, 1.0, 0.3, 0.0], np.float32)
UP = DOWN[::-1].copy()


def _d(x, sigma, scale):
    """A closed-form-enough denoiser: shrink towards 0, by `scale`."""
    return x * scale / (1.0 + sigma.reshape(-1, 1, 1) ** 2)


ENTRIES = {
    "sample": lambda d: ju.sample(d, X, DOWN, sampler="heun"),
    "mixing": lambda d: ju.iterative_mixing_sample(d, X, DOWN, key=jax.random.key(0)),
    "inversion": lambda d: ju.inverted_latents(d, X, UP),
}
JITTED = {
    "sample": jax.jit(lambda d_id, x: ju.sample(_REGISTRY[d_id], x, DOWN, sampler="heun"), static_argnums=0),
    "mixing": jax.jit(
        lambda d_id, x: ju.iterative_mixing_sample(_REGISTRY[d_id], x, DOWN, key=jax.random.key(0)),
        static_argnums=0,
    ),
    "inversion": jax.jit(lambda d_id, x: ju.inverted_latents(_REGISTRY[d_id], x, UP), static_argnums=0),
}
_REGISTRY: dict[int, object] = {}


def _run(entry: str, how: str, d) -> np.ndarray:
    if how == "eager":
        return np.asarray(ENTRIES[entry](d))
    # Under the caller's jit: a new id each call, so the caller's own trace is fresh (jax.jit
    # caches by its static argument; what is tested is our program cache inside it).
    key = len(_REGISTRY)
    _REGISTRY[key] = d
    return np.asarray(JITTED[entry](key, X))


# ---- the cases: (make) -> (denoiser, change(), fresh denoiser with the new value) ------------


class _ScaleAttr:
    def __init__(self):
        self.scale = 1.0

    def __call__(self, x, s):
        return _d(x, s, self.scale)


def case_float_attribute():
    d = _ScaleAttr()

    def change():
        d.scale = 2.5

    return d, change, lambda x, s: _d(x, s, 2.5)


SCALE = 1.0


def _reads_global(x, s):
    return _d(x, s, SCALE)


def case_module_float():
    global SCALE
    SCALE = 1.0

    def change():
        global SCALE
        SCALE = 2.0

    return _reads_global, change, lambda x, s: _d(x, s, 2.0)


@dataclasses.dataclass(slots=True)
class _Slots:
    w: jax.Array

    def __call__(self, x, s):
        return _d(x, s, self.w)


def case_slots():
    d = _Slots(jnp.float32(0.5))

    def change():
        d.w = jnp.float32(0.9)

    return d, change, lambda x, s: _d(x, s, 0.9)


class _ClassAttr:
    k = 1.0

    def __call__(self, x, s):
        return _d(x, s, type(self).k)


def case_class_attribute():
    cls = type("Fresh", (_ClassAttr,), {"k": 1.0})

    def change():
        cls.k = 3.0

    return cls(), change, lambda x, s: _d(x, s, 3.0)


def case_deep_attribute():
    m = types.SimpleNamespace()
    m.unet = types.SimpleNamespace(block=types.SimpleNamespace(conv=types.SimpleNamespace()))
    m.unet.block.conv.attn = types.SimpleNamespace(w=jnp.float32(0.5))

    def change():
        m.unet.block.conv.attn.w = jnp.float32(0.7)

    return (lambda x, s: _d(x, s, m.unet.block.conv.attn.w)), change, lambda x, s: _d(x, s, 0.7)


def case_nonlocal_float():
    v = 1.0

    def d(x, s):
        return _d(x, s, v)

    def change():
        nonlocal v
        v = 2.0

    return d, change, lambda x, s: _d(x, s, 2.0)


class _NoArray:
    def __init__(self):
        self.mu = 0.5

    def method(self, x, s):
        return _d(x, s, self.mu)


def case_bound_method_float():
    o = _NoArray()

    def change():
        o.mu = 1.5

    return o.method, change, lambda x, s: _d(x, s, 1.5)


def case_function_attribute():
    def d(x, s):
        return _d(x, s, d.w)

    d.w = jnp.float32(0.3)

    def change():
        d.w = jnp.float32(0.6)

    return d, change, lambda x, s: _d(x, s, 0.6)


def case_mutated_set():
    flags = {"half"}

    def d(x, s):
        return _d(x, s, 0.5 if "half" in flags else 1.0)

    return d, lambda: flags.clear(), lambda x, s: _d(x, s, 1.0)


P: dict = {}


def case_linen_shaped_global_params():
    global P
    P = {"params": {"Block_0": {"Dense_0": {"kernel": {"k": jnp.float32(0.4)}}}}}

    def d(x, s):
        return _d(x, s, P["params"]["Block_0"]["Dense_0"]["kernel"]["k"])

    def change():
        global P
        P = {"params": {"Block_0": {"Dense_0": {"kernel": {"k": jnp.float32(0.8)}}}}}

    return d, change, lambda x, s: _d(x, s, 0.8)


class _Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __init__(self):
        self.mu = 1.0

    def __call__(self, x, s):
        return _d(x, s, self.mu)


def case_unhashable_object_float():
    d = _Unhashable()

    def change():
        d.mu = 0.25

    return d, change, lambda x, s: _d(x, s, 0.25)


def case_closure_over_dict_of_floats():
    cfg = {"a": 1.0}
    return (lambda x, s: _d(x, s, cfg["a"])), (lambda: cfg.update(a=2.0)), lambda x, s: _d(x, s, 2.0)


def case_global_array_in_comprehension():
    g = types.SimpleNamespace(W=jnp.float32(0.5))

    def d(x, s):
        return sum(_d(x, s, g.W) for _ in range(2)) / 2

    def change():
        g.W = jnp.float32(1.5)

    return d, change, lambda x, s: _d(x, s, 1.5)


def case_reassigned_helper_closure():
    def make_net(w):
        return lambda x, s: _d(x, s, w)

    box = types.SimpleNamespace(net=make_net(jnp.float32(0.5)))

    def change():
        box.net = make_net(jnp.float32(0.75))

    return (lambda x, s: box.net(x, s)), change, lambda x, s: _d(x, s, 0.75)


def case_jitted_closure():
    box = types.SimpleNamespace(w=jnp.float32(0.5))
    make = lambda w: jax.jit(lambda x, s: _d(x, s, w))  # noqa: E731
    box.f = make(box.w)

    def change():
        box.f = make(jnp.float32(1.25))

    return (lambda x, s: box.f(x, s)), change, lambda x, s: _d(x, s, 1.25)


def case_numpy_array_mutated_in_place():
    w = np.array([0.5], np.float32)

    def change():
        w[0] = 0.1

    return (lambda x, s: _d(x, s, jnp.asarray(w)[0])), change, lambda x, s: _d(x, s, 0.1)


CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("how", ["eager", "jit"])
@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_value_gives_the_new_result(case, entry, how):
    d, change, fresh = CASES[case]()
    first = _run(entry, how, d)
    change()
    second = _run(entry, how, d)
    want = np.asarray(ENTRIES[entry](fresh))
    assert not np.allclose(first, want), "the change must change the result (else the test is void)"
    # The fresh denoiser is the same formula written directly: float32 rounding may differ by
    # a few ulps (inversion's values reach 1e2), never by the change's size (10% or more).
    np.testing.assert_allclose(second, want, rtol=1e-5, atol=1e-5)


def test_two_modules_with_the_same_source_keep_their_own_values():
    src = "import jax.numpy as jnp\nW = jnp.float32({w})\ndef denoiser(x, s):\n    return x * W\n"
    mods = []
    for i, w in enumerate((0.5, 2.0)):
        mod = types.ModuleType(f"_same_source_{i}")
        exec(src.format(w=w), mod.__dict__)
        mods.append(mod)
    a, b = (np.asarray(ENTRIES["sample"](m.denoiser)) for m in mods)
    np.testing.assert_allclose(b, np.asarray(ENTRIES["sample"](lambda x, s: x * 2.0)), rtol=1e-6)
    assert not np.allclose(a, b)


# ---- a denoiser does not change itself ---------------------------------------------------------


class _Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, x, s):
        self.n += 1
        return x


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_denoiser_that_rebinds_its_attribute_is_refused_and_put_back(entry):
    d = _Counter()
    with pytest.raises(ValueError, match=r"the denoiser rebinds denoiser\.n when called \(put back\)"):
        ENTRIES[entry](d)
    assert d.n == 0


def test_a_closure_that_rebinds_a_nonlocal_is_refused():
    calls = 0

    def d(x, s):
        nonlocal calls
        calls += 1
        return x

    with pytest.raises(ValueError, match="sample: the denoiser rebinds its closure's calls"):
        ENTRIES["sample"](d)
    assert calls == 0


# ---- what is not kept, what is not read --------------------------------------------------------


def test_a_traced_denoisers_arrays_are_not_kept_by_the_program():
    big = jnp.ones((512, 512), jnp.float32)
    ref = weakref.ref(big)
    ENTRIES["sample"](lambda x, s, big=big: _d(x, s, big[0, 0]))
    del big
    gc.collect()
    assert ref() is None


def test_unused_and_unconvertible_attributes_are_not_read():
    class Holder:
        names = np.array(["a", "b"])  # a string array: no JAX type
        huge = np.zeros((64, 1024, 1024), np.uint8)  # 64 MiB, never read

        def __call__(self, x, s):
            return _d(x, s, 0.5)

    np.testing.assert_allclose(
        np.asarray(ENTRIES["sample"](Holder())), np.asarray(ENTRIES["sample"](lambda x, s: _d(x, s, 0.5)))
    )


def test_host_values_read_while_tracing_work_as_under_jit():
    table = np.linspace(0.0, 1.0, 5)
    zero_d = jnp.float32(0.5)
    d = lambda x, s: _d(x, s, float(np.argmin(table[::-1])) + float(zero_d))  # noqa: E731
    np.testing.assert_allclose(
        np.asarray(ENTRIES["sample"](d)), np.asarray(ENTRIES["sample"](lambda x, s: _d(x, s, 4.5))), rtol=1e-6
    )


def test_a_sweep_of_new_jitted_denoisers_compiles_once():
    from jax_unsampler import _samplers

    ENTRIES["sample"](jax.jit(lambda x, s: _d(x, s, jnp.float32(0.0))))
    size = _samplers._sample_kernel._cache_size()
    outs = [
        np.asarray(ENTRIES["sample"](jax.jit(lambda x, s, w=w: _d(x, s, w)))) for w in jnp.arange(1.0, 5.0)
    ]
    assert _samplers._sample_kernel._cache_size() == size
    assert len({o.tobytes() for o in outs}) == 4


def test_callbacks_with_equal_text_are_told_apart():
    def via(fn):
        return lambda x, s: jax.pure_callback(fn, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    a = np.asarray(ENTRIES["sample"](via(lambda v: np.asarray(v) * 0.5)))
    b = np.asarray(ENTRIES["sample"](via(lambda v: np.asarray(v) * 0.25)))
    np.testing.assert_allclose(b, np.asarray(ENTRIES["sample"](lambda x, s: x * 0.25)), rtol=1e-6)
    assert not np.allclose(a, b)


def test_a_concretization_in_the_denoiser_is_told_as_such():
    with pytest.raises(ValueError, match=r"^sample: the denoiser needs a concrete value of x or sigma"):
        ENTRIES["sample"](lambda x, s: x * float(s[0]))


# ---- errors name the public function; wrong types are TypeErrors -------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ju.sample(3, X, DOWN, sampler="euler"), TypeError, r"^sample: denoiser must be callable"),
        (lambda: ju.inverted_latents("d", X, UP), TypeError, r"^inverted_latents: denoiser must be callable"),
        (
            lambda: ju.sample(lambda x, s: x, X, DOWN, sampler="euler_ancestral", key=3),
            TypeError,
            r"^sample: key",
        ),
        (
            lambda: ju.batch_unsample(
                3, "sd15", "euler", "karras", 4, latent=np.zeros((1, 4, 8, 8), np.float32)
            ),
            TypeError,
            r"^batch_unsample: key must be a PRNG key, got the int 3",
        ),
        (
            lambda: ju.batch_unsample(
                jax.random.key(0), "sd15", "euler", "bogus", 4, latent=np.zeros((1, 4, 8, 8), np.float32)
            ),
            ValueError,
            r"^batch_unsample: unknown scheduler 'bogus'",
        ),
        (
            lambda: ju.unsampler_sigmas(ju.preset("sd15").model_sampling, "euler", "bogus", 4),
            ValueError,
            r"^unsampler_sigmas: unknown scheduler 'bogus'",
        ),
        (
            lambda: ju.noised_latents(jax.random.key(0).reshape(1), X, DOWN),
            ValueError,
            r"^noised_latents: expected a single key",
        ),
        (lambda: ju.denoiser_from_model(3, ju.model_sampling("EPS")), TypeError, r"^denoiser_from_model"),
    ],
)
def test_errors_name_the_public_function(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- the researcher's first hour ---------------------------------------------------------------


def test_model_sampling_refuses_unknown_settings_with_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown sampling_settings key 'sigma_mx' \(did you mean 'sigma_max'\?\); "
        r"EDM reads sigma_min, sigma_max, sigma_data",
    ):
        ju.model_sampling("EDM", {"sigma_mx": 80.0})
    ju.model_sampling("EDM", {"shift": 2.0})  # another type's key: ignored, as ComfyUI ignores it


def _comfy_noise_scaling(ms, sigma, noise, latent):
    """ComfyUI's noise_scaling and max_denoise (comfy/model_sampling.py, comfy/samplers.py), in
    NumPy from their formulas: the closed form the helper must meet."""
    top = float(ms.sigma_max)
    if ms.model_type in ("FLOW", "FLUX"):
        return sigma * noise + (1.0 - sigma) * latent
    at_top = abs(top - sigma) <= 1e-5 * max(abs(top), abs(sigma)) or sigma > top
    return latent + noise * (np.sqrt(1.0 + sigma**2) if at_top else sigma)


@pytest.mark.parametrize("name", ["sd15", "sd3"])
@pytest.mark.parametrize("first", [0, 3])
def test_starting_latent_is_comfyuis_noise_scaling(name, first):
    ms = ju.preset(name).model_sampling
    sigmas = np.asarray(ju.ksampler_sigmas(ms, "euler", "karras" if name == "sd15" else "simple", 8))[first:]
    noise = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
    latent = np.random.default_rng(2).standard_normal((2, 4, 8, 8)).astype(np.float32)
    got = np.asarray(ju.starting_latent(None, latent, sigmas, ms, noise=noise))
    want = _comfy_noise_scaling(ms, float(sigmas[0]), noise, latent)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_starting_latent_keyed_noise_is_pinned_and_per_item():
    ms = ju.preset("sd15").model_sampling
    zeros = np.zeros((2, 4, 8, 8), np.float32)
    z = np.asarray(ju.starting_latent(jax.random.key(7), zeros, [1.0, 0.0], ms))
    eps = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.key(7), 1), (4, 8, 8)))
    np.testing.assert_array_equal(z[1], eps)
    import hashlib

    assert hashlib.sha256(z.tobytes()).hexdigest()[:16] == PINNED_START
    with pytest.raises(ValueError, match=r"^starting_latent: key is required"):
        ju.starting_latent(None, zeros, [1.0, 0.0], ms)


PINNED_START = "8ac8d89119ef4663"  # starting_latent(key(7), zeros (2, 4, 8, 8), [1, 0], sd15)


@pytest.mark.parametrize(("sampler", "order"), [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_round_trip_reconstructs_at_the_samplers_order(sampler, order):
    # Gaussian data N(mu, s^2) has a closed-form denoiser, so the round trip's error is the
    # sampler's own: halving the steps' size should divide it by about 2**order. The slope
    # fit over 3 -> 12 karras steps (before float32 and the step from sigma 0 make a floor near
    # 1e-4) must reach the order less 0.5.
    from mixing_toys import gaussian_denoiser

    den = gaussian_denoiser(jnp.float32(0.3))
    x = (np.random.default_rng(0).standard_normal((2, 4, 4, 4)) * 0.8 + 0.3).astype(np.float32)
    ms = ju.model_sampling("EPS")
    errs = []
    for n in (3, 6, 12):
        rt = ju.round_trip(den, x, ju.ksampler_sigmas(ms, sampler, "karras", n), sampler=sampler)
        assert rt.noise.shape == x.shape
        errs.append(float(np.sqrt(np.mean((np.asarray(rt.reconstruction) - x) ** 2))))
    slope = np.polyfit(np.log([3, 6, 12]), np.log(errs), 1)[0]
    assert -slope > order - 0.5, (errs, slope)


def test_round_trip_wants_a_full_schedule():
    with pytest.raises(ValueError, match=r"^round_trip: sigmas must end in 0"):
        ju.round_trip(lambda x, s: x, X, DOWN[:-1])
    with pytest.raises(ValueError, match=r"^round_trip: unknown sampler 'euler_ancestral'"):
        ju.round_trip(lambda x, s: x, X, DOWN, sampler="euler_ancestral")
