"""Brownian-tree noise for the SDE samplers (ComfyUI's default for them): diffrax's
`VirtualBrownianTree`, one path per item, as a `noise(sigma, sigma_next)` for `sample`'s and
`iterative_mixing_sample`'s `noise=`.

diffrax is an optional dependency (the `brownian` extra), imported when the noise is made.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._keys import canonical_key
from ._validation import check_latent, check_sigmas

NoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def _diffrax(fn: str):
    try:
        import diffrax
    except ImportError as err:
        raise ImportError(
            f"{fn}: needs diffrax (its VirtualBrownianTree): pip install 'jax-unsampler[brownian]'"
        ) from err
    return diffrax


def brownian_noise(
    key: jax.Array,
    latent: ArrayLike,
    sigmas: ArrayLike,
    *,
    batch_index: ArrayLike | None = None,
    tol: float = 2.0**-20,
) -> NoiseFn:
    """Noise from one Brownian path `W` per item over the schedule's sigmas (k-diffusion's
    `BrownianTreeNoiseSampler`, ComfyUI's default for the SDE samplers).

    `noise(sigma, sigma_next) = (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)`:
    standard normal for one interval, and the same path for every interval, so that a
    sampler's noise stays consistent when the step count changes (an interval's increment is
    the sum of its halves'). The path of item `b` comes from `fold_in(key, batch_index[b])`
    (item `b` alone with `batch_index=[b]` gets its own path); diffrax's
    `VirtualBrownianTree` evaluates it anywhere from the key alone, in `O(log(1 / tol))`.

    **Arguments:**

    - `key`: a PRNG key (`jax.random.key`).
    - `latent`: the `(B, ...)` latent (its shape and batch); `sigmas`: the schedule, whose
      smallest positive and largest sigma bound the path (sigmas outside are clipped to them,
      and an interval of length 0 gives 0).
    - `batch_index`: each item's index for its path, default `0..B-1`.
    - `tol`: the tree's resolution, relative to the schedule's span (diffrax's `tol`).

    **Returns:** `noise(sigma, sigma_next) -> (B, ...)` float32, traceable (pass it as
    `noise=`).
    """
    fn = "brownian_noise"
    diffrax = _diffrax(fn)
    from ._samplers import item_ids

    key = canonical_key(fn, key)
    x = check_latent(fn, latent)
    s = check_sigmas(fn, sigmas, order="descending", min_len=2)
    if not (isinstance(tol, float) and 0.0 < tol < 1.0):
        raise ValueError(f"{fn}: tol must be a Python float in (0, 1), got {tol!r}")
    ids = item_ids(fn, batch_index, x.shape[0])
    t0 = jnp.min(jnp.where(s > 0, s, jnp.inf))
    t1 = jnp.max(s)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
    shape = tuple(x.shape[1:])

    def increment(k: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
        tree = diffrax.VirtualBrownianTree(t0, t1, tol=(t1 - t0) * tol, shape=shape, key=k)
        return tree.evaluate(lo, hi)

    def noise(sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
        a = jnp.clip(jnp.asarray(sigma, jnp.float32), t0, t1)
        b = jnp.clip(jnp.asarray(sigma_next, jnp.float32), t0, t1)
        lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
        w = jax.vmap(increment, in_axes=(0, None, None))(keys, lo, hi)
        span = hi - lo
        scale = jnp.where(
            span > 0, jnp.where(b > a, 1.0, -1.0) / jnp.sqrt(jnp.where(span > 0, span, 1.0)), 0.0
        )
        return (w * scale).astype(jnp.float32)

    return noise


__all__ = ["brownian_noise"]
