"""The Python API under jit with captured arrays, and its range checks (issue 14 regressions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_subset

import jax_unsampler as ju

KEY = jax.random.key(3)
# Inputs from NumPy: a module-level JAX draw would compile at collection, in every worker.
LATENT = np.random.default_rng(9).standard_normal((2, 4, 6, 6)).astype(np.float32)
SIGMAS = np.array([0.2, 0.7, 1.5, 4.0], np.float32)
NOISE = np.random.default_rng(4).standard_normal((8, 4, 6, 6)).astype(np.float32)
SD15 = ju.preset("sd15")


def _noised(key, latent, sigmas, noise):
    return ju.noised_latents(key, latent, sigmas, normalize=True, batch_index=jnp.array([5, 2]))


def _markov(key, latent, sigmas, noise):
    return ju.noised_latents(key, latent, sigmas, coupling="markov")


def _from_noise(key, latent, sigmas, noise):
    return ju.noised_latents_from_noise(latent, sigmas, noise, coupling="markov", normalize=True)


def _batch(key, latent, sigmas, noise):
    return ju.batch_unsample(key, "sd15", "euler", "karras", 4, latent=latent)


# The quick suite takes one entry in each of these two tests, another in each.
@pytest.mark.parametrize("entry", quick_subset([_noised, _batch, _markov, _from_noise], 4))
def test_jit_with_captured_arrays_equals_eager(entry):
    # The latent, sigmas and noise come from the closure: concrete inside the trace.
    captured = jax.jit(lambda key: entry(key, LATENT, SIGMAS, NOISE))
    eager = entry(KEY, LATENT, SIGMAS, NOISE)
    # Inside the caller's jit the arrays are constants of one bigger program, which XLA may fold
    # and fuse differently (the normalize offset moved by an ulp here): equal to float32 rounding.
    np.testing.assert_allclose(np.asarray(captured(KEY)), np.asarray(eager), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("entry", quick_subset([_markov, _from_noise, _noised, _batch], 4))
def test_jit_with_passed_arrays_equals_eager_and_compiles_once(entry):
    passed = jax.jit(entry)
    eager = entry(KEY, LATENT, SIGMAS, NOISE)
    assert np.array_equal(np.asarray(passed(KEY, LATENT, SIGMAS, NOISE)), np.asarray(eager))
    other = passed(jax.random.key(4), LATENT + 1, SIGMAS * 2, NOISE - 1)
    assert other.shape == eager.shape and passed._cache_size() == 1


def test_markov_descending_sigmas_under_jit_give_nan_not_wrong_numbers():
    descending = jnp.array([0.2, 1.5, 0.7, 4.0])
    with pytest.raises(ValueError, match="coupling='markov' needs ascending non-negative sigmas"):
        _markov(KEY, LATENT, descending, None)
    z = np.asarray(jax.jit(_markov)(KEY, LATENT, descending, None)).reshape(4, -1)
    assert not np.isnan(z[:2]).any() and np.isnan(z[2:]).all()
    assert np.array_equal(  # the steps before the descent are the ascending run's
        z[:2], np.asarray(_markov(KEY, LATENT, descending[:2], None)).reshape(2, -1)
    )
    z = np.asarray(jax.jit(_from_noise)(KEY, LATENT, descending, NOISE)).reshape(4, -1)
    assert np.isnan(z[2:]).all()


@pytest.mark.parametrize(
    "batch_index",
    [
        np.array([1, 2**32], np.int64),  # wrapped to item 0's noise before
        np.array([2**32 + 1, 0], np.uint64),
        [2**32, 1],
        [-1, 0],
    ],
)
def test_batch_index_outside_uint32_is_refused(batch_index):
    with pytest.raises(ValueError, match=r"noised_latents: batch_index entries must be in \[0, 4294967295\]"):
        ju.noised_latents(KEY, LATENT, SIGMAS, batch_index=batch_index)


def test_batch_index_at_the_top_of_uint32_is_kept():
    top = ju.noised_latents(KEY, LATENT, SIGMAS, batch_index=np.array([2**32 - 1, 0], np.int64))
    alone = ju.noised_latents(KEY, LATENT[:1], SIGMAS, batch_index=np.array([2**32 - 1], np.uint32))
    assert np.array_equal(np.asarray(top).reshape(4, 2, -1)[:, 0], np.asarray(alone).reshape(4, -1))


@pytest.mark.parametrize("step_offset", [2**32, 2**32 - 3, 2**64])
def test_step_ids_past_uint32_are_refused(step_offset):
    match = r"step_offset \(step ids are uint32\) must be an integer in \[0, 4294967292\]"
    with pytest.raises(ValueError, match=match):
        ju.noised_latents(KEY, LATENT, SIGMAS, step_offset=step_offset)
    with pytest.raises(ValueError, match=match):  # at the call, not halfway through the chunks
        ju.noised_latents_chunks(KEY, LATENT, SIGMAS, chunk_steps=3, step_offset=step_offset)


def test_chunks_up_to_the_last_step_id():
    last = 2**32 - 4  # steps 2**32 - 4 .. 2**32 - 1; the padded last chunk must not wrap
    whole = ju.noised_latents(KEY, LATENT, SIGMAS, step_offset=last, coupling="markov")
    parts = list(
        ju.noised_latents_chunks(KEY, LATENT, SIGMAS, chunk_steps=3, step_offset=last, coupling="markov")
    )
    assert np.array_equal(np.concatenate([np.asarray(p) for p in parts]), np.asarray(whole))


@pytest.mark.parametrize(
    "scale",
    [np.float32(-1), np.float32(0), np.float64("nan"), jnp.float32(-1), jnp.inf, np.array([0.2, 0.3])],
)
def test_latent_scale_factor_checks_numpy_and_jax_scalars(scale):
    with pytest.raises(
        ValueError, match="unsampler_sigmas: latent_scale_factor must be a positive finite number"
    ):
        ju.unsampler_sigmas(SD15.model_sampling, "euler", "karras", 5, latent_scale_factor=scale)


def test_numpy_and_jax_scale_factors_equal_a_float():
    want = ju.unsampler_sigmas(SD15.model_sampling, "euler", "karras", 5, latent_scale_factor=0.18215)
    for scale in (np.float32(0.18215), jnp.float32(0.18215)):
        got = ju.unsampler_sigmas(SD15.model_sampling, "euler", "karras", 5, latent_scale_factor=scale)
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_model_pair_takes_a_numpy_scale_and_says_what_else_to_pass():
    want = ju.batch_unsample(KEY, (SD15.model_sampling, 0.18215), "euler", "karras", 3, latent=LATENT)
    got = ju.batch_unsample(
        KEY, (SD15.model_sampling, np.float32(0.18215)), "euler", "karras", 3, latent=LATENT
    )
    assert np.array_equal(np.asarray(got), np.asarray(want))
    for bad in (np.float32(-1), "0.18"):
        match = r"batch_unsample: model=\(ModelSampling, x\) needs x to be a positive latent scale factor"
        with pytest.raises(ValueError, match=match + r" \(a number such as 0.18215\) or a LatentFormat"):
            ju.batch_unsample(KEY, (SD15.model_sampling, bad), "euler", "karras", 3, latent=LATENT)


def test_missing_latent_is_named_for_the_function_called():
    with pytest.raises(
        ValueError, match=r"^batch_unsample: latent is required: pass a \(B, C, \.\.\.\) array"
    ):
        ju.batch_unsample(KEY, "sd15", "euler", "karras", 3, latent=None)
