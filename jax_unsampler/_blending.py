"""The blending schedules and functions of iterative mixing (ComfyUI-Iterative-Mixer's).

`blending_schedule` gives the rising weights `c1` of the sampler's latent against the noised
latent, step by step; `blend` mixes the two with a named function (whose formula, shared with
the torch loops, is in `_steps.py`). The original's quirks are kept and listed in the docs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._float32 import divide
from ._names import BLENDING_FUNCTIONS, BLENDING_SCHEDULES
from ._steps import BLENDS
from ._validation import check_choice, check_finite, check_int, check_latent, host_values, is_concrete

# --- blending schedules ---------------------------------------------------------------------


_INT32_MAX = 2**31 - 1


def _pct_step(fn: str, what: str, pct: ArrayLike | None, steps: int, default: int) -> ArrayLike:
    """The original's `int(pct * steps)`: exact in float64 for a concrete pct, else float32 (a
    traced pct that is not finite makes the whole schedule NaN: never a silently wrong step)."""
    if pct is None:
        return default
    if is_concrete(pct):
        check_finite(fn, what, pct)
        value = float(host_values(pct))
        if abs(value * steps) > _INT32_MAX:
            raise ValueError(
                f"{fn}: {what} must be a finite number with |{what} * steps| < 2**31, got {pct!r}"
            )
        return int(value * steps)
    return jnp.trunc(jnp.asarray(pct, jnp.float32) * steps).astype(jnp.int32)


_READS_START = frozenset({"linear", "logistic"})
"""The schedules that read `start_blending_at_pct` (cosine ignores it, as the original)."""


def _check_window(fn: str, name: str, start_pct: ArrayLike | None, stop_pct: ArrayLike | None) -> None:
    """Blending rises from `start_pct` (0 when None) to `stop_pct`: refuse, where both are
    concrete and the schedule reads `start`, a reversed window (`start_pct > stop_pct`). A stop
    of 0 (or None) means `steps`, so it cannot be below the start; traced values are not
    checked (a reversed traced window gives the finite step-like schedule of the formulas)."""
    if name not in _READS_START or stop_pct is None or start_pct is None:
        return
    if not (is_concrete(stop_pct) and is_concrete(start_pct)):
        return
    check_finite(fn, "start_blending_at_pct", start_pct)
    check_finite(fn, "stop_blending_at_pct", stop_pct)
    start, stop = float(host_values(start_pct)), float(host_values(stop_pct))
    if stop != 0.0 and start > stop:
        raise ValueError(
            f"{fn}: start_blending_at_pct must not be above stop_blending_at_pct for the {name} "
            f"schedule (blending rises from the one to the other), got start_blending_at_pct={start!r} "
            f"and stop_blending_at_pct={stop!r}"
        )


def _traced_ok(*values: object) -> jax.Array:
    """Whether the traced ones among the settings are finite (concrete ones were checked)."""
    ok = jnp.asarray(True)
    for v in values:
        if v is not None and not is_concrete(v):
            ok = ok & jnp.all(jnp.isfinite(jnp.asarray(v, jnp.float32)))
    return ok


def _cosine(t, steps, start, stop, alpha_1):
    del start  # the cosine schedule ignores it
    f32 = jnp.float32
    stop = jnp.where(jnp.asarray(stop) == 0, steps, stop)  # the original divides by 0 here (NaN)
    stop_f = jnp.asarray(stop, f32)
    factor = 0.5 * (1 + jnp.cos(divide(f32(math.pi) * (stop - t).astype(f32), stop_f)))
    return jnp.where(t > stop, f32(1.0), factor ** jnp.asarray(alpha_1, f32))


def _linear(t, steps, start, stop, alpha_1):
    del alpha_1
    stop = jnp.where(jnp.asarray(stop) == 0, steps, stop)  # the original's `stop or steps`
    ramp = divide(t.astype(jnp.float32), jnp.asarray(stop, jnp.float32))
    ramp = jnp.where(t > stop, 1.0, ramp)
    return jnp.where(t < start, 0.0, ramp)


def _logistic(t, steps, start, stop, alpha_1):
    f32 = jnp.float32
    stop = jnp.where(jnp.asarray(stop) == 0, steps, stop)  # the original fails here (NameError)
    top = f32(steps - 1)
    steepness = jnp.asarray(alpha_1, f32) * 5
    # The original divides a Python number by a tensor three times: torch computes that as
    # `reciprocal(tensor) * number`, which rounds differently from a division.
    inv = 1 / top
    midpoint = inv * ((stop + jnp.asarray(start)) / 2).astype(f32)
    x = divide(t.astype(f32), top)
    out = 1 / (1 + jnp.exp(-steepness * (x - midpoint)))
    out = jnp.where(x > inv * jnp.asarray(stop, f32), f32(1.0), out)
    return jnp.where(x < inv * jnp.asarray(start, f32), f32(0.0), out)


_SCHEDULES = {"cosine": _cosine, "linear": _linear, "logistic": _logistic}


def _lerp(lo: jax.Array, hi: jax.Array, w: jax.Array) -> jax.Array:
    """torch.lerp's two-sided formula."""
    return jnp.where(jnp.abs(w) < 0.5, lo + w * (hi - lo), hi - (hi - lo) * (1 - w))


def blending_schedule(
    name: str,
    steps: int,
    *,
    alpha_1: ArrayLike,
    start_blending_at_pct: ArrayLike | None = None,
    stop_blending_at_pct: ArrayLike | None = None,
    clamp_blending_at_pct: ArrayLike | None = None,
    blend_min: ArrayLike = 0.0,
    blend_max: ArrayLike = 1.0,
) -> jax.Array:
    """The original's blending schedule `c1` for a sampler of `steps` steps.

    With `start = int(start_pct * steps)` (0 when None) and `stop = int(stop_pct * steps)`
    (`steps` when None), `t = 0..steps-1`:

    - `"cosine"`: `(0.5 (1 + cos(pi (stop - t) / stop)))^alpha_1`, 1 where `t > stop`; ignores
      `start` (as the original does); `stop = 0` means `steps` (the original divides by 0 there,
      a NaN at t = 0).
    - `"linear"`: `t / stop`, 1 where `t > stop`, 0 where `t < start`; ignores `alpha_1`;
      `stop = 0` means `steps`.
    - `"logistic"`: `1 / (1 + exp(-5 alpha_1 (t/(steps-1) - (stop+start)/2/(steps-1))))`, 1
      above `stop`, 0 below `start`; needs `steps >= 2`; `stop = 0` means `steps` (the
      original raises a NameError there).

    Then entries from `int(clamp_pct * steps)` on are set to 1 (a negative index counts from
    the end, as a Python slice), and the schedule is mapped onto `[blend_min, blend_max]` with
    `torch.lerp`'s formula. Percentages given as Python numbers are turned into steps in
    float64 exactly as the original; traced ones in float32 (which can differ by one step when
    `pct * steps` lies within float32 rounding of an integer).

    **Arguments:**

    - `name`: one of `BLENDING_SCHEDULES` (static).
    - `steps`: the sampler's step count, `len(sigmas) - 1`, at least 1 (static).
    - `alpha_1`, `start_blending_at_pct`, `stop_blending_at_pct`, `clamp_blending_at_pct`,
      `blend_min`, `blend_max`: the original node's settings (values; may be traced).

    Checked up front where concrete: `alpha_1 >= 0`, `blend_min`, `blend_max` and the
    percentages finite scalars (`|pct * steps| < 2**31`), and for `linear` and `logistic`
    `start_blending_at_pct <= stop_blending_at_pct` unless the stop is 0. Traced settings that are not finite
    make every entry NaN.

    **Returns:** a `(steps,)` float32 array.
    """
    return schedule_for(
        "blending_schedule", name, steps, alpha_1=alpha_1, start_blending_at_pct=start_blending_at_pct,
        stop_blending_at_pct=stop_blending_at_pct, clamp_blending_at_pct=clamp_blending_at_pct,
        blend_min=blend_min, blend_max=blend_max,
    )  # fmt: skip


def schedule_for(
    fn: str,
    name: str,
    steps: int,
    *,
    alpha_1: ArrayLike,
    start_blending_at_pct: ArrayLike | None = None,
    stop_blending_at_pct: ArrayLike | None = None,
    clamp_blending_at_pct: ArrayLike | None = None,
    blend_min: ArrayLike = 0.0,
    blend_max: ArrayLike = 1.0,
) -> jax.Array:
    """`blending_schedule`, its errors naming `fn` (the mixing functions check through it)."""
    name = check_choice(fn, "name", name, BLENDING_SCHEDULES)
    steps = check_int(fn, "steps", steps, 1, 10**6)
    if name == "logistic" and steps < 2:
        raise ValueError(
            f"{fn}: the logistic schedule needs steps >= 2 (its top step is steps - 1), got {steps}"
        )
    for what, value in (("alpha_1", alpha_1), ("blend_min", blend_min), ("blend_max", blend_max)):
        if getattr(value, "shape", ()) != ():
            raise ValueError(f"{fn}: {what} must be a scalar, got shape {tuple(value.shape)}")  # type: ignore[union-attr]
    check_finite(fn, "alpha_1", alpha_1, lo=0.0)
    check_finite(fn, "blend_min", blend_min)
    check_finite(fn, "blend_max", blend_max)
    _check_window(fn, name, start_blending_at_pct, stop_blending_at_pct)
    start = _pct_step(fn, "start_blending_at_pct", start_blending_at_pct, steps, 0)
    stop = _pct_step(fn, "stop_blending_at_pct", stop_blending_at_pct, steps, steps)
    clamp = clamp_blending_at_pct is not None
    first = _pct_step(fn, "clamp_blending_at_pct", clamp_blending_at_pct, steps, steps) if clamp else 0
    c1 = _schedule_kernel(
        *(jnp.asarray(v, jnp.int32) for v in (start, stop, first)),
        *(jnp.asarray(v, jnp.float32) for v in (alpha_1, blend_min, blend_max)),
        name=name, steps=steps, clamp=clamp,
    )  # fmt: skip
    settings = (
        alpha_1,
        blend_min,
        blend_max,
        start_blending_at_pct,
        stop_blending_at_pct,
        clamp_blending_at_pct,
    )
    if all(is_concrete(v) for v in settings):
        return c1
    return jnp.where(_traced_ok(*settings), c1, jnp.float32(jnp.nan))


@functools.partial(jax.jit, static_argnames=("name", "steps", "clamp"))
def _schedule_kernel(
    start: jax.Array,
    stop: jax.Array,
    first: jax.Array,
    alpha_1: jax.Array,
    lo: jax.Array,
    hi: jax.Array,
    *,
    name: str,
    steps: int,
    clamp: bool,
) -> jax.Array:
    """`blending_schedule` from its start, stop and clamp steps (int32) and its values."""
    t = jnp.arange(steps, dtype=jnp.int32)
    c1 = _SCHEDULES[name](t, steps, start, stop, alpha_1).astype(jnp.float32)
    if clamp:
        first = jnp.where(first < 0, jnp.maximum(first + steps, 0), first)
        c1 = jnp.where(t >= first, jnp.float32(1.0), c1)
    return _lerp(lo, hi, c1)


# --- blending functions ---------------------------------------------------------------------


def blend(name: str, noised: ArrayLike, x: ArrayLike, weight: ArrayLike) -> jax.Array:
    """The original's blending function, per batch item (`l1 = noised`, `l2 = x`).

    - `"addition"`: `(1 - w) noised + w x`.
    - `"slerp"`: spherical interpolation of each item flattened: with unit vectors `a`, `b` of
      `noised` and `x` (a zero vector's NaNs set to 0), `omega = acos(a . b)`,
      `sin((1-w) omega)/sin(omega) noised + sin(w omega)/sin(omega) x` (NaN where
      `omega = 0`, as the original).
    - `"norm_only"`: `noised + w (|noised| x / |x| - noised)`.

    **Arguments:**

    - `name`: one of `BLENDING_FUNCTIONS` (static).
    - `noised`, `x`: `(B, ...)` floating arrays of one shape (B may be 0: an empty result).
    - `weight`: a scalar or one weight per item, `(B,)`.

    **Returns:** the blend, `x`'s shape, in `x`'s dtype (computed in float32).
    """
    fn = "blend"
    name = check_choice(fn, "name", name, BLENDING_FUNCTIONS)
    a = check_latent(fn, noised, what="noised")
    b = check_latent(fn, x, what="x")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: noised and x must have one shape, got {a.shape} and {b.shape}")
    w = jnp.asarray(weight, jnp.float32)
    if w.shape not in ((), (b.shape[0],)):
        raise ValueError(f"{fn}: weight must be a scalar or of shape ({b.shape[0]},), got shape {w.shape}")
    if b.size == 0:
        return jnp.zeros(b.shape, b.dtype)
    return _blend_kernel(a.astype(jnp.float32), b.astype(jnp.float32), w, name=name).astype(b.dtype)


@functools.partial(jax.jit, static_argnames=("name",))
def _blend_kernel(a: jax.Array, b: jax.Array, w: jax.Array, *, name: str) -> jax.Array:
    if name == "addition" and w.ndim:
        w = w.reshape(w.shape + (1,) * (b.ndim - 1))
    from ._sampling import JAX_OPS

    return BLENDS[name](JAX_OPS, a, b, w)
