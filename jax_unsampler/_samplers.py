"""ComfyUI's Euler, DPM++ 2M and LCM samplers (its k-diffusion code) as `lax.scan` loops.

A denoiser is `denoiser(x, sigma) -> denoised` with `sigma` of shape `(B,)` (k-diffusion's
convention). `sample` runs the plain samplers; `_mixing.py` runs the same steps with a blend
after each (the iterative mixing of ComfyUI-Iterative-Mixer), so the steps live here once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._denoiser_args import Denoiser, DenoiserStatic, join_denoiser, split_denoiser
from ._keys import canonical_key
from ._names import NOISE_SCALINGS
from ._noise import _is_concrete as is_concrete
from ._noise import apply_noise
from ._validation import check_choice

Pair = tuple[jax.Array, jax.Array]
"""A loop carry of two latents (the latent and the DPM++ 2M ring of denoised ones)."""

MIXING_SAMPLERS = ("euler", "dpmpp_2m", "lcm")
"""The samplers `sample` and `iterative_mixing_sample` offer (ComfyUI's names)."""


class Step(NamedTuple):
    """What one step reads: its index and the sigmas before, at and after it."""

    i: jax.Array
    sigma_prev: jax.Array
    sigma: jax.Array
    sigma_next: jax.Array


def _per_item(sigma: jax.Array, ndim: int) -> jax.Array:
    return sigma.reshape((1,) * ndim)


def call_denoiser(fn: str, denoiser: Denoiser, x: jax.Array, sigma: jax.Array) -> jax.Array:
    """`denoiser(x, sigma * ones(B))`, checked to return x's shape."""
    out = denoiser(x, jnp.broadcast_to(sigma, (x.shape[0],)))
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(x.shape):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"{fn}: denoiser returned shape {got}; it must return the latent's shape {x.shape}")
    return jnp.asarray(out, x.dtype)


def euler_step(x: jax.Array, denoised: jax.Array, step: Step) -> jax.Array:
    """k-diffusion's Euler step (no churn): `x + (x - denoised) / sigma * (sigma_next - sigma)`."""
    d = (x - denoised) / _per_item(step.sigma, x.ndim)
    return x + d * _per_item(step.sigma_next - step.sigma, x.ndim)


class Dpm2mCoefficients(NamedTuple):
    """DPM++ 2M's per-step scalars (with `t = -log sigma`, `h = t_next - t`)."""

    ratio: jax.Array  # exp(-t_next) / exp(-t)
    gain: jax.Array  # expm1(-h)
    half: jax.Array  # 1 / (2 r), r = (t - t_prev) / h
    first_order: jax.Array  # the first step and the step onto sigma 0


def dpmpp_2m_coefficients(step: Step) -> Dpm2mCoefficients:
    """The scalars of `dpmpp_2m_step`, for one step or (before the loop) every step at once:
    computed per step inside the loop they are a string of tiny kernels each iteration."""
    t, t_next = -jnp.log(step.sigma), -jnp.log(step.sigma_next)
    h = t_next - t
    r = (t - -jnp.log(step.sigma_prev)) / h
    first_order = (step.i == 0) | (step.sigma_next == 0)
    return Dpm2mCoefficients(jnp.exp(-t_next) / jnp.exp(-t), jnp.expm1(-h), 1 / (2 * r), first_order)


def dpmpp_2m_step(
    x: jax.Array, denoised: jax.Array, old_denoised: jax.Array, c: Dpm2mCoefficients
) -> jax.Array:
    """k-diffusion's DPM-Solver++(2M) step; first order on the first step and onto sigma 0."""
    half = _per_item(c.half, x.ndim)
    second = (1 + half) * denoised - half * old_denoised
    update = jnp.where(c.first_order, denoised, second)
    return _per_item(c.ratio, x.ndim) * x - _per_item(c.gain, x.ndim) * update


def remember(history: jax.Array, i: jax.Array, denoised: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Store step `i`'s denoised latent in a two-slot ring `(2, *x.shape)`; return the ring and
    step `i - 1`'s (zeros before step 0).

    Carrying the previous denoised latent as its own loop value makes XLA copy each new one into
    the carry (the old one is still read that step); a ring is updated in place.
    """
    slot = i % 2
    history = jax.lax.dynamic_update_index_in_dim(history, denoised, slot, 0)
    return history, jax.lax.dynamic_index_in_dim(history, 1 - slot, keepdims=False)


def lcm_renoise(x: jax.Array, noise: jax.Array, step: Step, scaling: str) -> jax.Array:
    """Where `sigma_next > 0`: the model's noise scaling of `noise` at `sigma_next` onto `x`."""
    renoised = apply_noise(x, noise * step.sigma_next, step.sigma_next, scaling)
    return jnp.where(step.sigma_next > 0, renoised, x)


def steps_of(sigmas: jax.Array, start: int = 0) -> Step:
    """The per-step inputs of a scan over `sigmas` (step indices counted from `start`)."""
    n = sigmas.shape[0] - 1
    prev = jnp.concatenate([sigmas[:1], sigmas[:-2]])
    return Step(jnp.arange(start, start + n), prev, sigmas[:-1], sigmas[1:])


def step_noise(
    key: jax.Array | None, noise: jax.Array | None, index: jax.Array, like: jax.Array
) -> jax.Array:
    """The step's standard normal noise: a given table's row, or drawn from `key` folded with
    the step index."""
    if noise is not None:
        return jnp.asarray(noise)[index]
    assert key is not None
    return jax.random.normal(jax.random.fold_in(key, index), like.shape, like.dtype)


def check_sigmas(fn: str, sigmas: ArrayLike) -> jax.Array:
    """1-D float32 sigmas, at least two; descending (non-increasing), finite and >= 0 when concrete."""
    s = jnp.asarray(sigmas, jnp.float32)
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError(f"{fn}: sigmas must be 1-D with at least 2 entries (one step), got shape {s.shape}")
    if is_concrete(s):
        v = np.asarray(s)
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"{fn}: sigmas must be finite and >= 0, got {v.tolist()}")
        if np.any(np.diff(v) > 0):
            raise ValueError(
                f"{fn}: sigmas must be descending (noisiest first, as KSampler gives them), got {v.tolist()}"
            )
    return s


def check_latent(fn: str, what: str, x: ArrayLike) -> jax.Array:
    arr = jnp.asarray(x)
    if arr.ndim < 2 or not jnp.issubdtype(arr.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: {what} must be a floating (B, ...) array of at least 2 dimensions, "
            f"got shape {arr.shape} and dtype {arr.dtype}"
        )
    return arr


def needs_lcm_noise(sigmas: jax.Array) -> bool:
    """Whether LCM draws noise: some step ends above 0 (always assumed for traced sigmas)."""
    return not is_concrete(sigmas) or bool(np.any(np.asarray(sigmas)[1:] > 0))


def sample_scan(
    fn: str,
    denoiser: Denoiser,
    x: jax.Array,
    sigmas: jax.Array,
    sampler: str,
    *,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
    noise_scaling: str = "eps",
) -> jax.Array:
    """The plain sampler loop (names checked by the caller)."""
    steps = steps_of(sigmas)
    if sampler == "dpmpp_2m":

        def body_2m(carry: Pair, inp: tuple[Step, Dpm2mCoefficients]) -> tuple[Pair, None]:
            (x, history), (step, c) = carry, inp
            denoised = call_denoiser(fn, denoiser, x, step.sigma)
            history, old = remember(history, step.i, denoised)
            return (dpmpp_2m_step(x, denoised, old, c), history), None

        history = jnp.zeros((2, *x.shape), x.dtype)
        return jax.lax.scan(body_2m, (x, history), (steps, dpmpp_2m_coefficients(steps)))[0][0]

    def body(x: jax.Array, step: Step) -> tuple[jax.Array, None]:
        denoised = call_denoiser(fn, denoiser, x, step.sigma)
        if sampler == "euler":
            return euler_step(x, denoised, step), None
        return lcm_renoise(denoised, step_noise(key, noise, step.i, x), step, noise_scaling), None

    return jax.lax.scan(body, x, steps)[0]


def sample(
    denoiser: Denoiser,
    latent_or_noise: ArrayLike,
    sigmas: ArrayLike,
    *,
    sampler: str,
    key: jax.Array | None = None,
    noise_scaling: str | None = None,
) -> jax.Array:
    """Sample along `sigmas` with ComfyUI's Euler, DPM++ 2M or LCM sampler (no mixing).

    The steps are those of ComfyUI's `comfy/k_diffusion/sampling.py` (`sample_euler` without
    churn, `sample_dpmpp_2m`, `sample_lcm`), run as one `lax.scan`.

    **Arguments:**

    - `denoiser`: `denoiser(x, sigma) -> denoised`, `sigma` of shape `(B,)`, returning `x`'s
      shape (e.g. from `denoiser_from_model`).
    - `latent_or_noise`: the `(B, ...)` start at `sigmas[0]`, as ComfyUI hands it to the
      sampler (for text-to-image: the model's noise scaling of noise at `sigmas[0]`).
    - `sigmas`: descending noise levels, as KSampler gives them (usually ending in 0).
    - `sampler`: `"euler"`, `"dpmpp_2m"` or `"lcm"` (static).
    - `key`: the PRNG key of LCM's fresh noise (step `i` draws from `fold_in(key, i)`);
      required for `"lcm"` when some `sigmas[i+1] > 0` (always when `sigmas` are traced).
    - `noise_scaling`: how LCM re-noises, `"eps"` (`x + sigma * eps`) or `"const"` (rectified
      flow); default: the denoiser's own when it comes from `denoiser_from_model`, else `"eps"`.

    **Returns:** the sampled latent, `latent_or_noise`'s shape, float32.
    """
    fn = "sample"
    sampler = check_choice(fn, "sampler", sampler, MIXING_SAMPLERS)
    if noise_scaling is None:
        noise_scaling = getattr(denoiser, "noise_scaling", "eps")
    scaling = check_choice(fn, "noise_scaling", noise_scaling, NOISE_SCALINGS)
    if not callable(denoiser):
        raise ValueError(
            f"{fn}: denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}"
        )
    x = check_latent(fn, "latent_or_noise", latent_or_noise).astype(jnp.float32)
    s = check_sigmas(fn, sigmas)
    if sampler == "lcm" and needs_lcm_noise(s):
        if key is None:
            raise ValueError(f"{fn}: sampler 'lcm' draws fresh noise: pass key= (e.g. jax.random.key(0))")
        key = canonical_key(fn, key)
    arrays, denoiser_static = split_denoiser(denoiser)
    return _sample_kernel(arrays, x, s, key, statics=_SampleStatics(denoiser_static, sampler, scaling))


class _SampleStatics(NamedTuple):
    """What `_sample_kernel` compiles in: the denoiser's non-array parts and the names."""

    denoiser: DenoiserStatic
    sampler: str
    noise_scaling: str


@functools.partial(jax.jit, static_argnames=("statics",))
def _sample_kernel(
    arrays: list[jax.Array],
    x: jax.Array,
    sigmas: jax.Array,
    key: jax.Array | None,
    *,
    statics: _SampleStatics,
) -> jax.Array:
    denoiser = join_denoiser(arrays, statics.denoiser)
    return sample_scan(
        "sample", denoiser, x, sigmas, statics.sampler, key=key, noise_scaling=statics.noise_scaling
    )
