"""Properties of the noised batch: layout, keying, statistics, dtypes, normalize, couplings."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import quick_subset

import jax_unsampler as ju
from jax_unsampler import _noise_kernels

KEY = jax.random.key(20261128)


def _sigmas(n=6):
    return ju.unsampler_sigmas(ju.preset("sd15").model_sampling, "euler", "karras", n)


def _latent(shape=(3, 4, 5, 6), seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _eps(z, x, s):
    """Recover the noise: z[i*B + b] = x[b] + s[i] * eps[i, b]."""
    n, b = s.shape[0], x.shape[0]
    return (np.asarray(z).reshape(n, b, *x.shape[1:]) - np.asarray(x)[None]) / np.asarray(s).reshape(
        (n, 1) + (1,) * (x.ndim - 1)
    )


@pytest.mark.parametrize("jit", quick_subset([False, True], 2))  # TestVariants runs both quickly
def test_layout_is_step_major_with_documented_keys(jit):
    x, s = _latent(), _sigmas()
    fn = jax.jit(ju.noised_latents) if jit else ju.noised_latents
    z = fn(KEY, x, s)
    chex.assert_shape(z, (6 * 3, 4, 5, 6))
    for i in (0, 3, 5):
        for b in (0, 2):
            eps = jax.random.normal(jax.random.fold_in(jax.random.fold_in(KEY, i), b), x.shape[1:])
            np.testing.assert_allclose(z[i * 3 + b], x[b] + s[i] * eps, rtol=1e-6, atol=1e-5)


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree(self):
        x, s = _latent(), _sigmas()
        fn = self.variant(lambda k, x, s: ju.noised_latents(k, x, s, normalize=True, coupling="markov"))
        ref = ju.noised_latents(KEY, x, s, normalize=True, coupling="markov")
        np.testing.assert_allclose(np.asarray(fn(KEY, x, s)), np.asarray(ref), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("shape", quick_subset([(1, 4, 8, 8), (2, 16, 3, 4, 4), (3, 64, 10), (2, 7)], 2))
def test_any_batch_and_rank(shape):
    x, s = _latent(shape), _sigmas(4)
    z = ju.noised_latents(KEY, x, s)
    chex.assert_shape(z, (4 * shape[0], *shape[1:]))
    eps = _eps(z, x, s)
    assert np.all(np.isfinite(eps))


def test_noise_is_standard_normal():
    """Kolmogorov-Smirnov at a fixed key against N(0, 1).

    N = 6 * 3 * 4 * 32 * 32 = 73728 draws; the 0.1% critical value of the KS statistic is
    1.95 / sqrt(N) = 0.0072, so a correct generator fails this with probability 1e-3 for a
    random key, and never for this fixed one; a wrong scale (say 1.1) moves it to ~0.04.
    """
    x, s = _latent((3, 4, 32, 32)), _sigmas()
    eps = _eps(ju.noised_latents(KEY, x, s), x, s).ravel()
    stat = scipy.stats.kstest(eps, "norm").statistic
    assert stat < 1.95 / np.sqrt(eps.size)
    # Mean and variance: standard errors 1/sqrt(N) = 0.0037 and sqrt(2/N) = 0.0052; 5 of each.
    assert abs(eps.mean()) < 5 / np.sqrt(eps.size)
    assert abs(eps.var() - 1) < 5 * np.sqrt(2 / eps.size)


def test_each_step_and_item_gets_independent_noise():
    """Correlation between the noise of distinct (step, item) pairs is ~0.

    Each pair's sample correlation over M = 4096 elements has standard error 1/sqrt(M) = 0.016;
    the largest of the 153 pairs stays under 5/sqrt(M) = 0.078 unless the streams repeat
    (a repeated key gives exactly 1).
    """
    x, s = _latent((3, 4, 32, 32)), _sigmas()
    eps = _eps(ju.noised_latents(KEY, x, s), x, s).reshape(18, -1)
    corr = np.corrcoef(eps)
    off = np.abs(corr[~np.eye(18, dtype=bool)])
    assert off.max() < 5 / np.sqrt(eps.shape[1])


def test_determinism_per_key_and_difference_across_keys():
    x, s = _latent(), _sigmas()
    a = ju.noised_latents(KEY, x, s)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(ju.noised_latents(KEY, x, s)))
    assert not np.allclose(np.asarray(a), np.asarray(ju.noised_latents(jax.random.key(7), x, s)))


def test_legacy_uint32_keys_are_accepted():
    x, s = _latent(), _sigmas()
    legacy = ju.noised_latents(jax.random.PRNGKey(3), x, s)
    typed = ju.noised_latents(jax.random.key(3), x, s)
    np.testing.assert_array_equal(np.asarray(legacy), np.asarray(typed))


@pytest.mark.parametrize("coupling", quick_subset(["markov", "independent", "shared"], 3))
def test_prefix_of_sigmas_gives_prefix_of_batch(coupling):
    x, s = _latent(), _sigmas(8)
    full = ju.noised_latents(KEY, x, s, coupling=coupling)
    part = ju.noised_latents(KEY, x, s[:5], coupling=coupling)
    np.testing.assert_array_equal(np.asarray(part), np.asarray(full[: 5 * 3]))


# One coupling in the quick suite (the pinned chunk tests take the others).
@pytest.mark.parametrize("coupling", quick_subset(ju.COUPLINGS, 3))
@pytest.mark.parametrize("normalize", quick_subset([True, False], 2))
def test_chunks_equal_one_run(coupling, normalize):
    x, s = _latent(), _sigmas(11)
    full = ju.noised_latents(KEY, x, s, coupling=coupling, normalize=normalize)
    chunks = list(ju.noised_latents_chunks(KEY, x, s, chunk_steps=4, coupling=coupling, normalize=normalize))
    assert [c.shape[0] for c in chunks] == [12, 12, 9]
    np.testing.assert_array_equal(np.asarray(jnp.concatenate(chunks)), np.asarray(full))


def test_step_offset_continues_the_stream():
    x, s = _latent(), _sigmas(8)
    full = ju.noised_latents(KEY, x, s)
    tail = ju.noised_latents(KEY, x, s[5:], step_offset=5)
    np.testing.assert_array_equal(np.asarray(tail), np.asarray(full[15:]))


# bfloat16 is in the quick pinned hashes too
@pytest.mark.parametrize("dtype", quick_subset([jnp.float16, jnp.bfloat16, jnp.float32], 2))
def test_dtype_is_kept_and_computed_in_float32(dtype):
    x, s = _latent().astype(dtype), _sigmas()
    z = ju.noised_latents(KEY, x, s)
    assert z.dtype == dtype
    ref = ju.noised_latents(KEY, x.astype(jnp.float32), s).astype(dtype)  # one rounding at the end
    np.testing.assert_array_equal(np.asarray(z, np.float32), np.asarray(ref, np.float32))


def test_normalize_subtracts_the_mean_of_the_first_entry():
    x, s = _latent() + 3.0, _sigmas()
    raw = np.asarray(ju.noised_latents(KEY, x, s))
    norm = np.asarray(ju.noised_latents(KEY, x, s, normalize=True))
    np.testing.assert_allclose(norm, raw - raw[0].mean(), rtol=1e-5, atol=1e-4)
    assert abs(norm[0].mean()) < 1e-5


def test_vmap_over_keys():
    x, s = _latent(), _sigmas()
    keys = jax.random.split(KEY, 3)
    batched = jax.vmap(lambda k: ju.noised_latents(k, x, s))(keys)
    for j in range(3):
        np.testing.assert_array_equal(np.asarray(batched[j]), np.asarray(ju.noised_latents(keys[j], x, s)))


def test_new_values_do_not_recompile():
    x, s = _latent(), _sigmas()
    ju.noised_latents(KEY, x, s)
    size = _noise_kernels._noised_scan._cache_size()
    ju.noised_latents(jax.random.key(99), x + 1, s * 2)
    ju.noised_latents(jax.random.key(5), x, _sigmas(12)[:6])
    assert _noise_kernels._noised_scan._cache_size() == size


def test_batch_index_keys_an_items_noise():
    """ComfyUI's rule: an item's noise depends only on the seed and its batch index."""
    x, s = _latent((4, 4, 6, 6)), _sigmas()
    whole = np.asarray(ju.noised_latents(KEY, x, s, batch_index=[10, 11, 12, 13])).reshape(6, 4, 4, 6, 6)
    alone = np.asarray(ju.noised_latents(KEY, x[2:3], s, batch_index=[12])).reshape(6, 1, 4, 6, 6)
    np.testing.assert_array_equal(alone[:, 0], whole[:, 2])


def _coupled_eps(coupling, n=8, shape=(2, 4, 32, 32)):
    x = jnp.zeros(shape)
    s = _sigmas(n)
    return _eps(ju.noised_latents(KEY, x, s, coupling=coupling), x, s).reshape(n, -1), np.asarray(s)


@pytest.mark.parametrize("coupling", ju.COUPLINGS)
def test_each_entry_is_standard_normal_in_every_coupling(coupling):
    """Per-entry marginals: every step's noise passes KS against N(0, 1) (M = 8192 draws;
    the 0.1% critical value 1.95 / sqrt(M) = 0.0215)."""
    eps, _ = _coupled_eps(coupling)
    for row in eps:
        assert scipy.stats.kstest(row, "norm").statistic < 1.95 / np.sqrt(row.size)


@pytest.mark.parametrize("coupling", ju.COUPLINGS)
def test_correlation_of_consecutive_entries(coupling):
    """0 for independent, 1 for shared, sigma_{i-1} / sigma_i for markov.

    With M = 8192 samples the standard error of a correlation near 0 is 1/sqrt(M) = 0.011
    (smaller near 1); 5 standard errors = 0.055.
    """
    eps, s = _coupled_eps(coupling)
    corr = np.array([np.corrcoef(eps[i - 1], eps[i])[0, 1] for i in range(1, len(s))])
    expected = {"independent": np.zeros(len(s) - 1), "shared": np.ones(len(s) - 1), "markov": s[:-1] / s[1:]}
    np.testing.assert_allclose(corr, expected[coupling], atol=5 / np.sqrt(eps.shape[1]))


def _documented_noise(x, steps):
    """The noise the docs promise: step i, item b from fold_in(fold_in(key, i), b), step-major."""
    pairs = [(i, b) for i in range(steps) for b in range(x.shape[0])]
    return np.stack(
        [jax.random.normal(jax.random.fold_in(jax.random.fold_in(KEY, i), b), x.shape[1:]) for i, b in pairs]
    )


@pytest.mark.parametrize(
    ("coupling", "normalize"), [("independent", True), ("shared", False), ("markov", False)]
)
def test_from_noise_matches_keyed_noise(coupling, normalize):
    x, s = _latent(), _sigmas()
    z = ju.noised_latents(KEY, x, s, coupling=coupling, normalize=normalize)
    got = ju.noised_latents_from_noise(x, s, _documented_noise(x, 6), coupling=coupling, normalize=normalize)
    np.testing.assert_allclose(np.asarray(got), np.asarray(z), rtol=1e-5, atol=1e-4)


def test_empty_sigmas_give_an_empty_batch():
    x = _latent((2, 4, 3, 3))
    z = ju.noised_latents(KEY, x, jnp.zeros((0,)))
    chex.assert_shape(z, (0, 4, 3, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(latent=jnp.ones((4,))), r"rank >= 2.*got shape \(4,\)"),
        (dict(latent=jnp.ones((1, 4, 2, 2), jnp.int32)), r"latent must be floating point.*int32"),
        (dict(latent=jnp.full((1, 4, 2, 2), jnp.nan)), r"NaN or infinite"),
        (dict(latent=jnp.full((1, 4, 2, 2), jnp.inf)), r"NaN or infinite"),
        (dict(sigmas=jnp.ones((2, 3))), r"sigmas must be 1-D, got shape \(2, 3\)"),
        (dict(sigmas=jnp.array([1.0, jnp.nan])), r"sigmas contain NaN"),
        (dict(key=0), r"key must be a PRNG key, got the int 0; pass jax.random.key\(0\)"),
        (dict(key=jax.random.split(KEY, 2)), r"single key.*use jax.vmap"),
        (dict(key=jnp.ones((3,), jnp.float32)), r"key must be a PRNG key"),
        (dict(coupling="coupled"), r"unknown coupling 'coupled'.*independent, shared, markov"),
        (
            dict(coupling="markov", sigmas=jnp.array([3.0, 1.0])),
            r"markov' needs ascending non-negative sigmas",
        ),
        (dict(noise_scaling="flow"), r"unknown noise_scaling 'flow'.*eps, const"),
        (dict(batch_index=[0, 1]), r"batch_index must be 1 integers"),
        (dict(batch_index=[-1]), r"batch_index entries must be in \[0, 4294967295\]"),
        (dict(step_offset=-1), r"step_offset \(step ids are uint32\) must be an integer in \[0, "),
        (dict(normalize="yes"), r"normalize must be True or False"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(key=KEY, latent=jnp.ones((1, 4, 2, 2)), sigmas=jnp.array([1.0, 2.0]))
    args.update(kwargs)
    key, latent, sigmas = args.pop("key"), args.pop("latent"), args.pop("sigmas")
    with pytest.raises(_raised(match), match=match):
        ju.noised_latents(key, latent, sigmas, **args)


def test_value_checks_are_skipped_under_jit():
    """NaN checks need concrete values: under jit the shapes are still checked, values are not."""
    out = jax.jit(ju.noised_latents)(KEY, jnp.full((1, 2, 2), jnp.nan), jnp.array([1.0]))
    assert np.isnan(np.asarray(out)).all()
    with pytest.raises(ValueError, match="sigmas must be 1-D"):
        jax.jit(ju.noised_latents)(KEY, jnp.ones((1, 2, 2)), jnp.ones((1, 1)))


def test_key_from_seed_is_jax_random_key_below_2_to_32_and_64_bit_above():
    for seed in (0, 1, 2**32 - 1):
        expected = jax.random.key_data(jax.random.key(seed))
        assert np.array_equal(jax.random.key_data(ju.key_from_seed(seed)), expected)
    assert jax.random.key_data(ju.key_from_seed(2**40 + 3)).tolist() == [2**8, 3]
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="seed must be an integer in"):
            ju.key_from_seed(bad)


def test_from_noise_new_values_do_not_recompile():
    """The torch-noise path: new seeds (new noise values) and sigmas reuse one compilation."""
    x, s = _latent(), _sigmas()
    rng = np.random.default_rng(0)
    ju.noised_latents_from_noise(x, s, rng.standard_normal((18, 4, 5, 6), np.float32))
    size = _noise_kernels._from_noise._cache_size()
    ju.noised_latents_from_noise(x + 1, s * 3, rng.standard_normal((18, 4, 5, 6), np.float32))
    assert _noise_kernels._from_noise._cache_size() == size


def _raised(match):
    """What the wrong thing raises: a TypeError for what is not a key (as jax.random), else ValueError."""
    return TypeError if "must be a PRNG key" in match else ValueError
