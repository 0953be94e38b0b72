"""Iterative mixing sampling: ComfyUI-Iterative-Mixer's sampler in JAX.

After each sampler step the latent is blended with the noised latent of the step's own sigma
(DemoFusion's "skip residual"): `x <- blend(z'[i], step(x), c1[i])`, `c1` a rising schedule
(`_blending.py`). The steps are `_steps.py`'s and the loop `_sampling.integrate`'s. The rules
follow the original node pack's code; its quirks are kept (see the mixing guide).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._blending import schedule_for
from ._denoiser_args import Denoiser, DenoiserStatic, denoiser_errors, join_denoiser, split_denoiser
from ._latent_format import LatentFormat
from ._model_sampling import ModelSampling, snr_offset_sigma
from ._names import BLENDING_FUNCTIONS, BLENDING_SCHEDULES, MIXING_SAMPLERS
from ._samplers import (
    NoiseFn,
    check_model_sampling,
    check_noise,
    default_noise_scaling,
    draws_noise,
    item_ids,
    required_key,
)
from ._sampling import JAX_OPS, Noise, Run, integrate
from ._steps import SAMPLER_STEPS, match_normalize, sampler_options
from ._validation import (
    check_choice,
    check_denoiser,
    check_flag,
    check_latent,
    check_latent_format,
    check_normalize_on_mean,
    check_sigmas,
    host_values,
    is_concrete,
)

MIX_STREAM = 0x6D6978
"""Mixing's own draws (LCM, rewind) come from `fold_in(key, MIX_STREAM)`, apart from the noised
batch that `noised=None` builds from `key` itself."""


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


_ORDER_MIN_SIZE = 64
"""The fewest latent elements `check_order` looks at (below, a correct batch could be refused)."""


def check_order(fn: str, latent: Any, sigmas: Any, noised: Any) -> None:
    """Refuse a concrete noised batch laid out against `sigmas` (least noise first).

    The entry at the largest sigma must be the farthest from the latent: with `s_hi^2 >
    4 s_lo^2`, a batch whose entry at `s_hi` is less than half as far (mean square) as its entry
    at `s_lo` is reversed. A correct batch is refused only when the ratio of two mean squares of
    `k` standard normals falls below 1/8: P(F(k, k) < 1/8) is 7e-5 at k = 16 and 8e-15 at
    k = 64, so latents below `_ORDER_MIN_SIZE` elements are not looked at. A traced batch cannot
    be looked at either: it must follow the convention (or pass `noised=None` with `key=`)."""
    if not (is_concrete(noised) and is_concrete(sigmas) and is_concrete(latent)):
        return
    if np.size(latent) < _ORDER_MIN_SIZE:
        return
    s = host_values(sigmas).astype(np.float64)
    hi, lo = int(np.argmax(s)), int(np.argmin(s))
    if not s[hi] ** 2 > 4 * s[lo] ** 2:
        return
    x = host_values(latent).astype(np.float64)
    batch = x.shape[0]
    z = host_values(noised)

    def far(i: int) -> float:
        return float(np.mean((z[i * batch : (i + 1) * batch].astype(np.float64) - x) ** 2))

    if 2 * far(hi) < far(lo):
        raise ValueError(
            f"{fn}: noised is in the other order: its entry at the largest sigma ({s[hi]:g}, entry {hi}) "
            f"is the nearest the latent; it must be laid along sigmas (descending, noisiest first). "
            "batch_unsample, unsampler_sigmas and inverted_latents give least noise first: flip the "
            "steps (z.reshape(n, B, ...)[::-1].reshape(n * B, ...)) or pass noised=None with key= to "
            "build it inside"
        )


class Mixing(NamedTuple):
    """Checked mixing settings."""

    latent: jax.Array  # as given (the output's dtype)
    sigmas: jax.Array  # float32, descending
    noised: jax.Array | None
    ranges: list[tuple[int, int]]
    draws: bool  # whether the sampler draws noise (some step ends above 0)
    run: Run
    model_sampling: ModelSampling | None


def check_mixing(
    fn: str,
    denoiser: object,
    latent: ArrayLike,
    sigmas: ArrayLike,
    noised: ArrayLike | None,
    *,
    sampler: str,
    blending_schedule: str,
    blending_function: str,
    rewind: object,
    rewind_min: Any,
    rewind_max: Any,
    normalize_on_mean: object,
    noise_scaling: str | None = None,
    latent_format: LatentFormat | None = None,
    options: Any = None,
    model_sampling: Any = None,
) -> Mixing:
    """Validate the mixing settings (the JAX function's and the torch functions' one path)."""
    sampler = check_choice(fn, "sampler", sampler, MIXING_SAMPLERS)
    opts = sampler_options(fn, sampler, options)
    check_choice(fn, "blending_schedule", blending_schedule, BLENDING_SCHEDULES)
    blend = check_choice(fn, "blending_function", blending_function, BLENDING_FUNCTIONS)
    check_denoiser(fn, denoiser)
    ms = check_model_sampling(fn, denoiser, model_sampling)
    scaling = default_noise_scaling(fn, denoiser, noise_scaling, ms)
    x = check_latent(fn, latent)
    s = check_sigmas(fn, sigmas, order="descending", min_len=2)
    check_latent_format(fn, latent_format)
    z = None
    if noised is not None:
        z = check_latent(fn, noised, what="noised")
        expected = (s.shape[0] * x.shape[0], *x.shape[1:])
        if tuple(z.shape) != expected:
            raise ValueError(
                f"{fn}: noised must have shape (len(sigmas) * B, ...) = {expected} (one entry per sigma, "
                f"noisiest first, as noised_latents lays them out for these sigmas), got {tuple(z.shape)}"
            )
        check_order(fn, x, s, z)
    lo = _static_fraction(fn, "rewind_min", rewind_min)
    hi = _static_fraction(fn, "rewind_max", rewind_max)
    if lo >= hi:
        raise ValueError(f"{fn}: rewind_min must be less than rewind_max, got {lo} >= {hi}")
    rewind = check_flag(fn, "rewind", rewind)
    normalize = check_flag(fn, "normalize_on_mean", normalize_on_mean)
    if normalize:
        check_normalize_on_mean(fn, tuple(x.shape))
    steps = s.shape[0] - 1
    if blending_schedule == "logistic" and steps < 2:
        raise ValueError(
            f"{fn}: the logistic blending schedule needs at least 2 steps (3 sigmas), got {steps}"
        )
    ranges = rewind_ranges(steps, lo, hi) if rewind else [(0, steps)]
    draws = SAMPLER_STEPS[sampler].noise and draws_noise(s)
    run = Run(fn, sampler, scaling, blend, len(ranges), latent_format=latent_format, options=opts)
    return Mixing(x, s, z, ranges, draws, run, ms)


def iterative_mixing_sample(
    denoiser: Denoiser,
    latent: ArrayLike,
    sigmas: ArrayLike,
    noised: ArrayLike | None = None,
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
    batch_index: ArrayLike | None = None,
    noise_scaling: str | None = None,
    latent_format: LatentFormat | None = None,
    options: Mapping[str, Any] | None = None,
    noise: NoiseFn | None = None,
    model_sampling: ModelSampling | None = None,
) -> jax.Array:
    """ComfyUI-Iterative-Mixer's iterative mixing sampler, for any batch and latent rank.

    The path starts at `noised[:B]` (the noisiest entry), and after sampler step `i` (from
    `sigmas[i]` to `sigmas[i+1]`) blends the latent with `noised`'s entry `i` (noised at
    `sigmas[i]`): `x <- blend(blending_function, z'[i], x, c1[i])`, `c1 =
    blending_schedule(...)` for `len(sigmas) - 1` steps. Every sampler of `MIXING_SAMPLERS`
    (ComfyUI's, all that step along the given sigmas), the blend placed as the original places
    it: after the step for the ODE and multistep samplers (its `"euler"`, `"heun"`,
    `"dpmpp_2m"`), and for the samplers that re-noise (ancestral, SDE: its `"lcm"`) between
    the denoising and the fresh noise (see the samplers' table in the docs). With
    `rewind`, the steps run again from the starts of `geometric_ranges` (`rewind_min`,
    `rewind_max`), each pass on a fresh batch `x + sigma * eps` noised from the previous
    pass's result. With `normalize_on_mean`, the result gets `latent`'s per-channel mean and std.

    **Order.** `sigmas` are descending (noisiest first, as KSampler gives them) and `noised` is
    laid along them: entry `i` (rows `i*B` to `i*B + B - 1`) at `sigmas[i]`, as
    `noised_latents(key, latent, sigmas)` makes it. The node's batches (`batch_unsample`,
    `unsampler_sigmas`, `inverted_latents` on ascending sigmas) are least noise first: flip
    their steps first. A concrete batch in the other order is refused (`ValueError`).

    **Arguments:**

    - `denoiser`: `denoiser(x, sigma) -> denoised` with `sigma` of shape `(B,)`, read as the
      denoiser rule says (docs/denoisers.md).
    - `latent`: the `(B, ...)` latent the sampler is given (ComfyUI's `x`), finite; it sets the
      shape and dtype of the result and is `normalize_on_mean`'s reference.
    - `sigmas`: descending noise levels, at least two, usually ending in 0 (e.g.
      `ksampler_sigmas(ms, "euler", "karras", 20)`); a schedule that stops above 0 (a split
      run's first half) stops there, still noised.
    - `noised`: the `(len(sigmas) * B, ...)` noised batch along `sigmas` (step-major, noisiest
      first), or `None` to build it inside as `noised_latents(key, latent, sigmas,
      batch_index=batch_index)`.
    - `sampler`, `blending_schedule`, `blending_function`: names (static); see
      `MIXING_SAMPLERS`, `BLENDING_SCHEDULES`, `BLENDING_FUNCTIONS`.
    - `options`: the sampler's options by ComfyUI's names (static), as for `sample`.
    - `alpha_1`, `start_blending_at_pct`, `stop_blending_at_pct`, `clamp_blending_at_pct`,
      `blend_min`, `blend_max`: the schedule's settings (values), see `blending_schedule`.
    - `rewind`, `rewind_min`, `rewind_max`: rewind passes; `0 <= rewind_min < rewind_max <= 1`,
      Python numbers (they set the number of passes: static; the passes run in a loop, so
      their number does not change the compile time).
    - `normalize_on_mean`: match the result's per-channel statistics to `latent`'s (needs 3
      or more dimensions).
    - `key`: the PRNG key of the noise drawn inside: the noised batch when `noised` is None, and
      from `fold_in(key, MIX_STREAM)` the sampler's fresh noise (where `noise` is not given)
      and rewind's batches, per pass, step, draw and item; required exactly when some is drawn.
    - `noise`: `noise(sigma, sigma_next) -> (B, ...)` standard normal noise for the sampler's
      own draws (k-diffusion's `noise_sampler`), as for `sample`; the noised batch and rewind's
      batches still come from `key`.
    - `model_sampling`: the model's `ModelSampling`, for the samplers that read it (as for
      `sample`); default: the denoiser's, when it comes from `denoiser_from_model`.
    - `batch_index`: each item's index for its draws (default `0..B-1`): item `b` alone with
      `batch_index=[b]` (and its rows of `noised`) equals item `b` of the batch.
    - `noise_scaling`: how LCM re-noises (`"eps"`, the original's, or `"const"`); default: the
      denoiser's own when it comes from `denoiser_from_model`, else `"eps"`.
    - `latent_format`: run in the model's space (`process_in` of the latent and of each noised
      entry, `process_out` of the result), or `None`.

    **Returns:** the final latent, `latent`'s shape and dtype (computed in float32).
    """
    fn = "iterative_mixing_sample"
    m = check_mixing(
        fn, denoiser, latent, sigmas, noised, sampler=sampler, blending_schedule=blending_schedule,
        blending_function=blending_function, rewind=rewind, rewind_min=rewind_min, rewind_max=rewind_max,
        normalize_on_mean=normalize_on_mean, noise_scaling=noise_scaling, latent_format=latent_format,
        options=options, model_sampling=model_sampling,
    )  # fmt: skip
    noise = check_noise(fn, noise)
    ids = item_ids(fn, batch_index, m.latent.shape[0])
    if m.noised is None:
        key = required_key(fn, key, "noised=None builds the noised batch from it")
    elif len(m.ranges) > 1:
        key = required_key(fn, key, "rewind draws fresh noised batches")
    elif m.draws and noise is None:
        key = required_key(fn, key, f"sampler {m.run.sampler!r} draws fresh noise; or pass noise=")
    else:
        key = None
    c1 = schedule_for(
        fn, blending_schedule, m.sigmas.shape[0] - 1, alpha_1=alpha_1,
        start_blending_at_pct=start_blending_at_pct, stop_blending_at_pct=stop_blending_at_pct,
        clamp_blending_at_pct=clamp_blending_at_pct, blend_min=blend_min, blend_max=blend_max,
    )  # fmt: skip
    if m.latent.size == 0:
        return jnp.zeros(m.latent.shape, m.latent.dtype)
    noised_arr = m.noised
    if noised_arr is None:
        from ._noise import noised_latents

        assert key is not None
        noised_arr = noised_latents(key, m.latent, m.sigmas, batch_index=ids)
    x = m.latent.astype(jnp.float32)
    arrays, denoiser_static = split_denoiser(fn, denoiser, x)
    statics = MixingStatics(denoiser_static, m.run, bool(normalize_on_mean))
    starts = jnp.asarray([start for start, _ in m.ranges], jnp.int32)
    draw_key = None if key is None else jax.random.fold_in(key, MIX_STREAM)
    draws = Noise(key=draw_key, item_ids=ids)
    with denoiser_errors(fn):
        out = mixing_kernel(
            arrays, x, m.sigmas, noised_arr.astype(jnp.float32), c1, draws, starts, m.model_sampling,
            statics=statics, noise=noise,
        )  # fmt: skip
    return out.astype(m.latent.dtype)


class MixingStatics(NamedTuple):
    """What `mixing_kernel` compiles in: the denoiser's non-array parts and the settings."""

    denoiser: DenoiserStatic
    run: Run
    normalize_on_mean: bool


def mix(
    run: Run,
    denoiser: Denoiser,
    latent: jax.Array,
    sigmas: jax.Array,
    noised: jax.Array,
    c1: jax.Array,
    noise: Noise,
    starts: jax.Array,
    normalize_on_mean: bool,
    model_sampling: ModelSampling | None = None,
) -> jax.Array:
    """The mixing loop on checked float32 arrays (inside a trace): the kernel's body, and the
    torch twin's with the original's draws as `noise` tables."""
    x = integrate(
        run, denoiser, latent, sigmas, noised=noised, c1=c1, noise=noise, starts=starts,
        first_sigma=snr_offset_sigma(model_sampling), model_sampling=model_sampling,
    )  # fmt: skip
    return match_normalize(JAX_OPS, x, latent) if normalize_on_mean else x


@functools.partial(jax.jit, static_argnames=("statics", "noise"))
def mixing_kernel(
    arrays: list[jax.Array],
    latent: jax.Array,
    sigmas: jax.Array,
    noised: jax.Array,
    c1: jax.Array,
    draws: Noise,
    starts: jax.Array,
    model_sampling: ModelSampling | None = None,
    *,
    statics: MixingStatics,
    noise: NoiseFn | None = None,
) -> jax.Array:
    """The jitted mixing loop: keyed draws (the public function) or given tables (torch's), or
    the caller's `noise(sigma, sigma_next)` for the sampler's own."""
    denoiser = join_denoiser(arrays, statics.denoiser)
    if noise is not None:
        draws = draws._replace(fn=noise)
    return mix(
        statics.run, denoiser, latent, sigmas, noised, c1, draws, starts, statics.normalize_on_mean,
        model_sampling,
    )  # fmt: skip


def noise_tables(
    draws: list[tuple[Any, Any]], ranges: list[tuple[int, int]], steps: int, shape: tuple[int, ...]
) -> Noise:
    """Given standard normal draws per pass, as the original draws them, as the loop's `Noise`:
    pass `p`'s `(rewind eps ((steps + 1 - start) * B, ...) or None, step draws (steps - start,
    draws, B, ...) or None)` placed at the global steps of the pass (the torch functions' and the
    recorded tests' way in)."""
    rewind = table_all = None
    if any(eps is not None for eps, _ in draws):
        rewind = np.zeros((len(ranges), steps + 1, *shape), np.float32)
    per_step = {np.shape(t)[1] for _, t in draws if t is not None}
    if per_step:
        table_all = np.zeros((len(ranges), steps, max(per_step), *shape), np.float32)
    for p, ((start, _), (eps, table)) in enumerate(zip(ranges, draws, strict=True)):
        if eps is not None and rewind is not None:
            rewind[p, start:] = np.asarray(eps, np.float32).reshape(steps + 1 - start, *shape)
        if table is not None and table_all is not None:
            table = np.asarray(table, np.float32)
            table_all[p, start:, : table.shape[1]] = table.reshape(steps - start, table.shape[1], *shape)
    return Noise(
        rewind=None if rewind is None else jnp.asarray(rewind),
        steps=None if table_all is None else jnp.asarray(table_all),
    )
