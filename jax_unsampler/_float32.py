"""Float32 helpers that follow torch's own arithmetic, where jnp's differs.

ComfyUI computes its schedules with float32 torch tensors; agreement to a few ulps needs the
same order of operations, not just the same formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def torch_linspace(start, stop, num: int) -> jnp.ndarray:
    """`torch.linspace(start, stop, num)` in float32, evaluated the way torch's CPU kernel does.

    Torch fills the first half forwards from `start` and the second half backwards from
    `stop` with a float32 step, so both end points are exact; `jnp.linspace` does not.

    **Arguments:**

    - `start`, `stop`: scalars (traced or concrete).
    - `num`: number of points, a Python int.

    **Returns:** a float32 array of shape `(num,)`.
    """
    start = jnp.asarray(start, jnp.float32)
    stop = jnp.asarray(stop, jnp.float32)
    if num == 0:
        return jnp.zeros((0,), jnp.float32)
    if num == 1:
        return start[None]
    step = (stop - start) / jnp.float32(num - 1)
    idx = jnp.arange(num)
    forward = start + step * idx.astype(jnp.float32)
    backward = stop - step * (num - 1 - idx).astype(jnp.float32)
    return jnp.where(idx < num // 2, forward, backward)


# pi/2 split into its float32 value and the remainder, for argument reduction near pi/2.
_HALF_PI_HI = np.float32(np.pi / 2)
_HALF_PI_LO = np.float32(np.pi / 2 - np.float64(_HALF_PI_HI))


def arctan(x):
    """Float32 `atan` that stays correctly rounded for large arguments.

    Near pi/2 a one-ulp error in `atan` becomes a large error once `tan` is applied again
    (the kl_optimal and V-continuous schedules do that), so large arguments use
    `pi/2 - atan(1/x)` with pi/2 carried in two parts.
    """
    x = jnp.asarray(x, jnp.float32)
    ax = jnp.abs(x)
    big = ax > 1
    small = jnp.arctan(jnp.where(big, 1 / jnp.where(big, ax, 1), ax))
    # The barrier stops XLA folding hi + (lo - small) into (hi + lo) - small, which loses lo.
    out = jnp.where(big, _HALF_PI_HI + jax.lax.optimization_barrier(_HALF_PI_LO - small), small)
    return jnp.sign(x) * out


def rounded(x):
    """`x` as a float32 value, rounded before any further arithmetic.

    XLA's CPU backend contracts a multiply followed by an add into one FMA, skipping the
    product's rounding that torch performs; a select the compiler cannot fold (NaN stays NaN
    either way) sits between them and keeps the two roundings.
    """
    return jnp.where(x == x, x, x + 1)


def divide(x, y):
    """`x / y` rounded as IEEE division, also when `y` is one value for many `x`.

    XLA rewrites a division by a broadcast scalar into a multiplication by its reciprocal,
    which rounds differently from torch's division. A denominator that depends on `x`
    elementwise (and equals `y` wherever it matters: where `x` is NaN the quotient is NaN
    either way) keeps the true division.
    """
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.where(x == x, y, x)
