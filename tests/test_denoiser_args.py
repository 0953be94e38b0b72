"""A denoiser as a kernel argument (_denoiser_args): any callable works, arrays are traced."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from mixing_toys import gaussian_denoiser

import jax_unsampler as ju


@dataclasses.dataclass  # not frozen: instances are unhashable, so they cannot be static as they are
class PlainObjectDenoiser:
    mu: float

    def __call__(self, x, sigma):
        return gaussian_denoiser(jnp.float32(self.mu))(x, sigma)


X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
DOWN = np.array([4.0, 1.0, 0.3, 0.0], np.float32)

ENTRIES = {
    "sample": lambda d: ju.sample(d, X, DOWN, sampler="euler"),
    "iterative_mixing_sample": lambda d: ju.iterative_mixing_sample(
        d, X, DOWN, np.concatenate([X] * len(DOWN)) * 2.0
    ),
    "inverted_latents": lambda d: ju.inverted_latents(d, X, DOWN[::-1].copy()),
}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_unhashable_callable_objects_work_and_equal_a_function(entry):
    run = ENTRIES[entry]
    obj = PlainObjectDenoiser(0.3)
    with pytest.raises(TypeError):
        hash(obj)
    got = run(obj)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(run(gaussian_denoiser(jnp.float32(0.3)))))
    # Another object with other values is another program, and its values are used.
    assert not np.allclose(np.asarray(run(PlainObjectDenoiser(0.9))), np.asarray(got))


def test_the_same_object_reuses_the_kernel():
    from jax_unsampler import _samplers

    obj = PlainObjectDenoiser(0.5)
    ENTRIES["sample"](obj)
    size = _samplers._sample_kernel._cache_size()
    ENTRIES["sample"](obj)
    assert _samplers._sample_kernel._cache_size() == size
