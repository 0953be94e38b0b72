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


def tan(y):
    """Float32 `tan` that stays accurate just below pi/2, via `cot(pi/2 - y)`."""
    y = jnp.asarray(y, jnp.float32)
    ay = jnp.abs(y)
    near = (ay > _HALF_PI_HI / 2) & (ay < 2 * _HALF_PI_HI)
    # hi - ay is exact here (Sterbenz); the barrier keeps XLA from reassociating the sum.
    rest = jax.lax.optimization_barrier(_HALF_PI_HI - jnp.where(near, ay, 0)) + _HALF_PI_LO
    out = jnp.where(near, 1 / jnp.tan(jnp.where(near, rest, 1)), jnp.tan(ay))
    return jnp.sign(y) * out


def arccos(x):
    """Float32 `acos` that stays accurate near 1, as `2 asin(sqrt((1 - x) / 2))` there.

    XLA's `acos` loses a few ulps just below 1 (Stable Cascade's timestep of its smallest
    sigma lands there); `1 - x` is exact for x >= 0.5, so this form keeps full precision.
    """
    x = jnp.asarray(x, jnp.float32)
    near_one = x > 0.5
    half_gap = jnp.where(near_one, (1 - x) * 0.5, 0.0)
    return jnp.where(near_one, 2 * jnp.arcsin(jnp.sqrt(half_gap)), jnp.arccos(jnp.where(near_one, 0.0, x)))


def cos(y):
    """Float32 `cos` that stays accurate near pi/2, via `sin(pi/2 - y)` for y in (pi/4, pi).

    Stable Cascade's schedule squares `cos` just below pi/2, where a one-ulp error becomes a
    1e-5 relative error in sigma; XLA's vectorised `cos` can be a few ulps off there.
    """
    # `y` is rounded first: otherwise XLA may fuse the multiply that made `y` into an FMA with
    # `pi/2 - y`, skipping the rounding torch does.
    y = rounded(jnp.asarray(y, jnp.float32))
    ay = jnp.abs(y)
    near = (ay > _HALF_PI_HI / 2) & (ay < 2 * _HALF_PI_HI)
    rest = jax.lax.optimization_barrier(_HALF_PI_HI - jnp.where(near, ay, 0)) + _HALF_PI_LO
    return jnp.where(near, jnp.sin(jnp.where(near, rest, 0)), jnp.cos(ay))


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
