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
