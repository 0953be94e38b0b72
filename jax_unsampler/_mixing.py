"""Iterative mixing sampling: ComfyUI-Iterative-Mixer's samplers in JAX.

After each sampler step the latent is blended with the noised latent of the step's own sigma
(DemoFusion's "skip residual"): `x <- blend(z'[i], step(x), c1[i])`, `c1` a rising schedule.
The rules follow the original node pack's code; its quirks are kept (see the README's
"Iterative mixing" section, which lists each).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._denoiser_args import DenoiserStatic, join_denoiser, split_denoiser
from ._float32 import divide
from ._keys import canonical_key
from ._samplers import (
    MIXING_SAMPLERS,
    Denoiser,
    Dpm2mCoefficients,
    Pair,
    Step,
    call_denoiser,
    check_latent,
    check_sigmas,
    dpmpp_2m_coefficients,
    dpmpp_2m_step,
    euler_step,
    is_concrete,
    needs_lcm_noise,
    remember,
    step_noise,
    steps_of,
)
from ._validation import check_choice, check_int

BLENDING_SCHEDULES = ("cosine", "linear", "logistic")
"""The rising blending schedules `c1` of `blending_schedule`."""

BLENDING_FUNCTIONS = ("addition", "slerp", "norm_only")
"""How `blend` mixes the noised latent with the sampler's."""


# --- blending schedules ---------------------------------------------------------------------


def _pct_step(fn: str, what: str, pct: ArrayLike | None, steps: int, default: int) -> ArrayLike:
    """The original's `int(pct * steps)`: exact in float64 for a concrete pct, else float32."""
    if pct is None:
        return default
    if is_concrete(pct):
        value = float(np.asarray(pct))
        if not math.isfinite(value):
            raise ValueError(f"{fn}: {what} must be a finite number or None, got {pct!r}")
        return int(value * steps)
    return jnp.trunc(jnp.asarray(pct, jnp.float32) * steps).astype(jnp.int32)


def _cosine(t, steps, start, stop, alpha_1):
    del start  # the cosine schedule ignores it
    f32 = jnp.float32
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
      `start` (as the original does); `stop = 0` gives NaN at t = 0 (as the original).
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

    **Returns:** a `(steps,)` float32 array.
    """
    fn = "blending_schedule"
    name = check_choice(fn, "name", name, BLENDING_SCHEDULES)
    steps = check_int(fn, "steps", steps, 1, 10**6)
    if name == "logistic" and steps < 2:
        raise ValueError(
            f"{fn}: the logistic schedule needs steps >= 2 (its top step is steps - 1), got {steps}"
        )
    start = _pct_step(fn, "start_blending_at_pct", start_blending_at_pct, steps, 0)
    stop = _pct_step(fn, "stop_blending_at_pct", stop_blending_at_pct, steps, steps)
    clamp = clamp_blending_at_pct is not None
    first = _pct_step(fn, "clamp_blending_at_pct", clamp_blending_at_pct, steps, steps) if clamp else 0
    return _schedule_kernel(
        *(jnp.asarray(v, jnp.int32) for v in (start, stop, first)),
        *(jnp.asarray(v, jnp.float32) for v in (alpha_1, blend_min, blend_max)),
        name=name, steps=steps, clamp=clamp,
    )  # fmt: skip


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


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))


def _addition(l1: jax.Array, l2: jax.Array, w: jax.Array) -> jax.Array:
    return (1 - w) * l1 + w * l2


def _slerp(l1: jax.Array, l2: jax.Array, w: jax.Array, l1_norm: jax.Array | None = None) -> jax.Array:
    low, high = _flat(l1), _flat(l2)
    # cos(omega) = (low / |low|) . (high / |high|), 0 where either is the zero vector (the original
    # sets those unit vectors' NaNs to 0), computed as one dot product over the two norms rather
    # than over two normalised copies: one reduction less per step.
    norms = (_norm(low) if l1_norm is None else l1_norm) * _norm(high)
    dot = jnp.sum(low * high, axis=1, keepdims=True)
    omega = jnp.arccos(jnp.where(norms == 0, 0.0, dot / norms))
    so = jnp.sin(omega)
    w = w.reshape(-1, 1)
    out = (jnp.sin((1.0 - w) * omega) / so) * low + (jnp.sin(w * omega) / so) * high
    return out.reshape(l1.shape)


def _norm_only(l1: jax.Array, l2: jax.Array, w: jax.Array, l1_norm: jax.Array | None = None) -> jax.Array:
    a, b = _flat(l1), _flat(l2)
    out = a + w.reshape(-1, 1) * (b / _norm(b) * (_norm(a) if l1_norm is None else l1_norm) - a)
    return out.reshape(l1.shape)


# The blends over whole items (addition, elementwise, is applied on its own in `_blend`).
_ITEM_BLENDS = {"slerp": _slerp, "norm_only": _norm_only}


def _blend(
    name: str, noised: jax.Array, x: jax.Array, weight: jax.Array, noised_norm: jax.Array | None = None
) -> jax.Array:
    """The blend; `noised_norm`, where given, is each item's norm of `noised`, `(B, 1)`."""
    w = jnp.asarray(weight, jnp.float32)
    if name == "addition":
        w = w.reshape(w.shape + (1,) * (x.ndim - w.ndim)) if w.ndim else w
        return _addition(noised, x, w)
    return _ITEM_BLENDS[name](noised, x, jnp.broadcast_to(w, (x.shape[0],)), noised_norm)


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
    - `noised`, `x`: `(B, ...)` arrays of one shape.
    - `weight`: a scalar or one weight per item, `(B,)`.

    **Returns:** the blend, `x`'s shape, float32.
    """
    fn = "blend"
    name = check_choice(fn, "name", name, BLENDING_FUNCTIONS)
    a = check_latent(fn, "noised", noised).astype(jnp.float32)
    b = check_latent(fn, "x", x).astype(jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"{fn}: noised and x must have one shape, got {a.shape} and {b.shape}")
    w = jnp.asarray(weight, jnp.float32)
    if w.shape not in ((), (b.shape[0],)):
        raise ValueError(f"{fn}: weight must be a scalar or of shape ({b.shape[0]},), got shape {w.shape}")
    return _blend(name, a, b, w)


# --- the mixing sampler ---------------------------------------------------------------------


def rewind_ranges(steps: int, rewind_min: float, rewind_max: float) -> list[tuple[int, int]]:
    """The original's `geometric_ranges(0, steps, rewind_min, max_start=int(steps * rewind_max))`:
    the step ranges of the passes, each starting `int((steps - start) * rewind_min)` later."""
    ranges, start, top = [(0, steps)], 0, int(steps * rewind_max)
    while True:
        new = start + int((steps - start) * rewind_min)
        if new >= steps or new <= start or new > top:
            return ranges
        ranges.append((new, steps))
        start = new


def match_normalize(x: jax.Array, reference: jax.Array) -> jax.Array:
    """Per item and channel (axis 1), `x`'s mean and unbiased std over the remaining axes set
    to `reference`'s."""
    axes = tuple(range(2, x.ndim))

    def stats(v):
        return jnp.mean(v, axis=axes, keepdims=True), jnp.std(v, axis=axes, keepdims=True, ddof=1)

    (tm, ts), (sm, ss) = stats(x), stats(reference)
    return (x - tm) / ts * ss + sm


def _one_pass(
    fn: str,
    denoiser: Denoiser,
    sigmas: jax.Array,
    noised: jax.Array,
    c1: jax.Array,
    sampler: str,
    blend_name: str,
    lcm_key: jax.Array | None,
    lcm_noise: jax.Array | None,
) -> jax.Array:
    """One pass of the original's `run`: start at step 0's entry of `noised` (`(steps * B, ...)`,
    step-major, as the caller has it: reshaping an argument to `(steps, B, ...)` makes XLA copy
    the whole batch before the loop), blend step i with step i's entry."""
    steps = steps_of(sigmas)
    batch = noised.shape[0] // sigmas.shape[0]

    # The norms of the noised entries do not depend on the path: one pass over the batch before
    # the loop rather than a reduction over z'[i] in every step (slerp and norm_only).
    norms = None
    if blend_name != "addition":
        norms = _norm(noised.reshape(noised.shape[0], -1))

    def read(x: jax.Array, step: Step) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        """The step's noised entry (indexed in place: no copy of the batch), its per-item norms,
        and the denoised x."""
        z = jax.lax.dynamic_slice_in_dim(noised, step.i * batch, batch)
        norm = None if norms is None else jax.lax.dynamic_slice_in_dim(norms, step.i * batch, batch)
        return z, norm, call_denoiser(fn, denoiser, x, step.sigma)

    if sampler == "dpmpp_2m":

        def body_2m(carry: Pair, inp: tuple[Step, Dpm2mCoefficients, jax.Array]) -> tuple[Pair, None]:
            (x, history), (step, c, w) = carry, inp
            z, norm, denoised = read(x, step)
            history, old = remember(history, step.i, denoised)
            return (_blend(blend_name, z, dpmpp_2m_step(x, denoised, old, c), w, norm), history), None

        history = jnp.zeros((2, batch, *noised.shape[1:]), noised.dtype)
        xs = (steps, dpmpp_2m_coefficients(steps), c1)
        return jax.lax.scan(body_2m, (noised[:batch], history), xs)[0][0]

    # Euler and LCM carry the latent only.
    def body(x: jax.Array, inp: tuple[Step, jax.Array]) -> tuple[jax.Array, None]:
        step, w = inp
        z, norm, denoised = read(x, step)
        if sampler == "euler":
            return _blend(blend_name, z, euler_step(x, denoised, step), w, norm), None
        x = _blend(blend_name, z, denoised, w, norm)
        noise = step_noise(lcm_key, lcm_noise, step.i, x)
        return jnp.where(step.sigma_next > 0, x + step.sigma_next * noise, x), None

    return jax.lax.scan(body, noised[:batch], (steps, c1))[0]


def mixing_path(
    fn: str,
    denoiser: Denoiser,
    latent: jax.Array,
    sigmas: jax.Array,
    noised: jax.Array,
    c1: jax.Array,
    *,
    sampler: str,
    blend_name: str,
    ranges: list[tuple[int, int]],
    normalize_on_mean: bool,
    key: jax.Array | None,
    noise: list[tuple[jax.Array | None, jax.Array | None]] | None = None,
) -> jax.Array:
    """The checked mixing loop. `noise`, where given, holds each pass's standard normal draws
    (`(rewind eps or None, LCM per-step table or None)`) instead of drawing from `key`."""
    x = latent
    for p, (start, _) in enumerate(ranges):
        sig = sigmas[start:]
        pass_key = None if key is None else jax.random.fold_in(key, p)
        rewind_eps, lcm_table = (None, None) if noise is None else noise[p]
        if p == 0:
            z = noised
        else:
            if rewind_eps is None:
                assert pass_key is not None
                rewind_eps = jax.random.normal(jax.random.fold_in(pass_key, 0), (sig.shape[0], *x.shape))
            eps = jnp.asarray(rewind_eps, jnp.float32).reshape(sig.shape[0], *x.shape)
            z = (x[None] + eps * sig.reshape((-1,) + (1,) * x.ndim)).reshape(-1, *x.shape[1:])
        lcm_key = None if pass_key is None else jax.random.fold_in(pass_key, 1)
        x = _one_pass(fn, denoiser, sig, z, c1[start:], sampler, blend_name, lcm_key, lcm_table)
    if normalize_on_mean:
        x = match_normalize(x, latent)
    return x


def _static_fraction(fn: str, what: str, value: Any) -> float:
    if not is_concrete(value):
        raise ValueError(
            f"{fn}: {what} sets the rewind passes and must be a Python number (static under jit)"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {what} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{fn}: {what} must be in [0, 1], got {value!r}")
    return number


def check_mixing(
    fn: str,
    denoiser: object,
    latent: ArrayLike,
    sigmas: ArrayLike,
    noised: ArrayLike,
    sampler: str,
    blending_schedule_name: str,
    blending_function: str,
    rewind: bool,
    rewind_min: Any,
    rewind_max: Any,
    normalize_on_mean: bool,
    key_given: bool,
) -> tuple[jax.Array, jax.Array, jax.Array, list[tuple[int, int]], bool]:
    """Validate the mixing settings; returns `(latent, sigmas, noised, ranges, key_needed)`."""
    check_choice(fn, "sampler", sampler, MIXING_SAMPLERS)
    check_choice(fn, "blending_schedule", blending_schedule_name, BLENDING_SCHEDULES)
    check_choice(fn, "blending_function", blending_function, BLENDING_FUNCTIONS)
    if not callable(denoiser):
        raise ValueError(
            f"{fn}: denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}"
        )
    x = check_latent(fn, "latent", latent).astype(jnp.float32)
    s = check_sigmas(fn, sigmas)
    z = jnp.asarray(noised)
    expected = (s.shape[0] * x.shape[0], *x.shape[1:])
    if tuple(z.shape) != expected:
        raise ValueError(
            f"{fn}: noised must have shape (len(sigmas) * B, ...) = {expected} (one entry per sigma, "
            f"noisiest first, as noised_latents lays them out for these sigmas), got {tuple(z.shape)}"
        )
    lo = _static_fraction(fn, "rewind_min", rewind_min)
    hi = _static_fraction(fn, "rewind_max", rewind_max)
    if lo >= hi:
        raise ValueError(f"{fn}: rewind_min must be less than rewind_max, got {lo} >= {hi}")
    if not isinstance(rewind, (bool, np.bool_)) or not isinstance(normalize_on_mean, (bool, np.bool_)):
        raise ValueError(f"{fn}: rewind and normalize_on_mean must be True or False")
    if normalize_on_mean and x.ndim < 3:
        raise ValueError(
            f"{fn}: normalize_on_mean matches per-channel statistics over the axes after the channel "
            f"axis; the latent needs at least 3 dimensions, got shape {x.shape}"
        )
    steps = s.shape[0] - 1
    if blending_schedule_name == "logistic" and steps < 2:
        raise ValueError(
            f"{fn}: the logistic blending schedule needs at least 2 steps (3 sigmas), got {steps}"
        )
    ranges = rewind_ranges(steps, lo, hi) if rewind else [(0, steps)]
    needed = len(ranges) > 1
    if sampler == "lcm":
        needed = needed or needs_lcm_noise(s)
    if needed and not key_given:
        why = "rewind draws fresh noised batches" if len(ranges) > 1 else "sampler 'lcm' draws fresh noise"
        raise ValueError(f"{fn}: key is required here ({why}): pass key= (e.g. jax.random.key(0))")
    return x, s, z.astype(jnp.float32), ranges, needed


_schedule = blending_schedule  # the name is shadowed by an argument below


def iterative_mixing_sample(
    denoiser: Denoiser,
    latent: ArrayLike,
    sigmas: ArrayLike,
    noised: ArrayLike,
    *,
    sampler: str = "euler",
    blending_schedule: str = "cosine",
    blending_function: str = "addition",
    alpha_1: ArrayLike = 2.4,
    start_blending_at_pct: ArrayLike | None = None,
    stop_blending_at_pct: ArrayLike | None = None,
    clamp_blending_at_pct: ArrayLike | None = None,
    blend_min: ArrayLike = 0.0,
    blend_max: ArrayLike = 1.0,
    rewind: bool = False,
    rewind_min: float = 0.0,
    rewind_max: float = 0.999,
    normalize_on_mean: bool = False,
    key: jax.Array | None = None,
) -> jax.Array:
    """ComfyUI-Iterative-Mixer's iterative mixing sampler, for any batch and latent rank.

    The path starts at `noised[:B]` (the noisiest entry), and after sampler step `i` (from
    `sigmas[i]` to `sigmas[i+1]`) blends the latent with `noised`'s entry `i` (noised at
    `sigmas[i]`): `x <- blend(blending_function, z'[i], x, c1[i])`, `c1 =
    blending_schedule(...)` for `len(sigmas) - 1` steps. Samplers as the original's:
    `"euler"` and `"dpmpp_2m"` (k-diffusion steps, then the blend), `"lcm"` (the blend of the
    denoised latent, then `+ sigmas[i+1] * eps` while `sigmas[i+1] > 0`). With `rewind`, the
    steps run again from the starts of `geometric_ranges` (`rewind_min`, `rewind_max`), each
    pass on a fresh batch `x + sigma * eps` noised from the previous pass's result. With
    `normalize_on_mean`, the result gets `latent`'s per-channel mean and std.

    **Arguments:**

    - `denoiser`: `denoiser(x, sigma) -> denoised` with `sigma` of shape `(B,)`.
    - `latent`: the `(B, ...)` latent the sampler is given (ComfyUI's `x`); it sets the shape
      and is `normalize_on_mean`'s reference.
    - `sigmas`: descending noise levels, as KSampler gives them.
    - `noised`: the `(len(sigmas) * B, ...)` noised batch for these sigmas, step-major,
      noisiest first (e.g. `noised_latents(key, latent, sigmas)`).
    - `sampler`, `blending_schedule`, `blending_function`: names (static); see
      `MIXING_SAMPLERS`, `BLENDING_SCHEDULES`, `BLENDING_FUNCTIONS`.
    - `alpha_1`, `start_blending_at_pct`, `stop_blending_at_pct`, `clamp_blending_at_pct`,
      `blend_min`, `blend_max`: the schedule's settings (values), see `blending_schedule`.
    - `rewind`, `rewind_min`, `rewind_max`: rewind passes; `0 <= rewind_min < rewind_max <= 1`,
      Python numbers (they set the number of passes: static).
    - `normalize_on_mean`: match the result's per-channel statistics to `latent`'s (needs 3
      or more dimensions).
    - `key`: the PRNG key of the noise drawn inside (LCM's per-step noise, rewind's batches);
      required exactly when some is drawn.

    **Returns:** the final latent, `latent`'s shape, float32.
    """
    fn = "iterative_mixing_sample"
    x, s, z, ranges, needed = check_mixing(
        fn, denoiser, latent, sigmas, noised, sampler, blending_schedule, blending_function,
        rewind, rewind_min, rewind_max, normalize_on_mean, key is not None,
    )  # fmt: skip
    key = canonical_key(fn, key) if needed else None
    c1 = _schedule(
        blending_schedule, s.shape[0] - 1, alpha_1=alpha_1,
        start_blending_at_pct=start_blending_at_pct, stop_blending_at_pct=stop_blending_at_pct,
        clamp_blending_at_pct=clamp_blending_at_pct, blend_min=blend_min, blend_max=blend_max,
    )  # fmt: skip
    arrays, denoiser_static = split_denoiser(denoiser)
    normalize = bool(normalize_on_mean)
    statics = _MixingStatics(denoiser_static, sampler, blending_function, tuple(ranges), normalize)
    return _mixing_kernel(arrays, x, s, z, c1, key, statics=statics)


class _MixingStatics(NamedTuple):
    """What `_mixing_kernel` compiles in: the denoiser's non-array parts and the settings."""

    denoiser: DenoiserStatic
    sampler: str
    blend_name: str
    ranges: tuple[tuple[int, int], ...]
    normalize_on_mean: bool


@functools.partial(jax.jit, static_argnames=("statics",))
def _mixing_kernel(
    arrays: list[jax.Array],
    latent: jax.Array,
    sigmas: jax.Array,
    noised: jax.Array,
    c1: jax.Array,
    key: jax.Array | None,
    *,
    statics: _MixingStatics,
) -> jax.Array:
    return mixing_path(
        "iterative_mixing_sample", join_denoiser(arrays, statics.denoiser), latent, sigmas, noised, c1,
        sampler=statics.sampler, blend_name=statics.blend_name, ranges=list(statics.ranges),
        normalize_on_mean=statics.normalize_on_mean, key=key,
    )  # fmt: skip
