"""PRNG keys: the canonical typed key of a key argument, and the key of a 64-bit seed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._names import SEED_MAX
from ._validation import check_int


def canonical_key(fn: str, key) -> jax.Array:
    """A typed key from a typed key or a legacy uint32 key, with a message saying how to fix it:
    a `TypeError` for what is not a key (as `jax.random`), a `ValueError` for a key array of
    the wrong shape."""
    if isinstance(key, (int, np.integer)):
        raise TypeError(f"{fn}: key must be a PRNG key, got the int {key!r}; pass jax.random.key({key!r})")
    try:
        dtype = key.dtype
    except AttributeError:
        raise TypeError(
            f"{fn}: key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
            f"got {type(key).__name__}"
        ) from None
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"{fn}: expected a single key, got a key array of shape {key.shape}; "
                "use jax.vmap to map over keys"
            )
        return key
    if dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    if dtype == jnp.uint32 and key.ndim == 1:
        raise ValueError(
            f"{fn}: key must be a PRNG key: a raw uint32 array is read as a threefry key of shape (2,), "
            f"got shape {key.shape}; wrap other key data with jax.random.wrap_key_data(data, impl='rbg')"
        )
    if dtype == jnp.uint32 and key.ndim > 1:
        raise ValueError(
            f"{fn}: expected a single legacy key of shape (2,), got shape {key.shape}; "
            "use jax.vmap to map over keys"
        )
    raise TypeError(
        f"{fn}: key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
        f"got an array of dtype {dtype} and shape {getattr(key, 'shape', ())}"
    )


def key_from_seed(seed: int) -> jax.Array:
    """The PRNG key of a 64-bit seed: `jax.random.key(seed)` as JAX makes it with 64-bit ints.

    Without 64-bit mode `jax.random.key` keeps only a seed's low 32 bits; the threefry key data
    `[seed >> 32, seed & 0xffffffff]` keeps all 64, and equals `jax.random.key(seed)` below 2**32.

    **Arguments:**

    - `seed`: an int from 0 to 2**64 - 1 (ComfyUI's seed range).

    **Returns:** a typed threefry2x32 key.
    """
    seed = check_int("key_from_seed", "seed", seed, 0, SEED_MAX)
    data = np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)
    return jax.random.wrap_key_data(jnp.asarray(data), impl="threefry2x32")
