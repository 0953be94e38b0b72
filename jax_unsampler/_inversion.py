"""Inversion: a latent carried up the probability-flow ODE, every intermediate state kept.

With a k-diffusion denoiser `D(x, sigma)` (the model's estimate of the clean latent), the ODE
`dx/dsigma = (x - D(x, sigma)) / sigma` links a latent at a low sigma to the noisy latent the
model would denoise back into it. Solving it towards higher sigmas, least noise first, gives
the model-consistent counterpart of the noised batch: the same `(n * B, ...)` step-major
layout, with each entry the ODE state at its sigma instead of `x + sigma * eps`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._denoiser_args import Denoiser, DenoiserStatic, join_denoiser, split_denoiser
from ._latent_format import LatentFormat
from ._names import INVERSION_SOLVERS, INVERSION_ZERO_SIGMA
from ._noise import check_latent, check_sigmas
from ._validation import check_choice


class _Statics(NamedTuple):
    """What is compiled into the kernel: the denoiser's non-array parts and the settings."""

    denoiser: DenoiserStatic
    solver: str
    latent_format: LatentFormat | None
    out_dtype: Any


def _slope(denoiser: Denoiser, x: jax.Array, sigma: jax.Array) -> jax.Array:
    """`(x - D(x, sigma)) / sigma`, with `D` called at a `(B,)` sigma, in float32.

    A sigma of 0 is evaluated at `INVERSION_ZERO_SIGMA` (the ODE's slope is 0/0 there).
    """
    at = jnp.where(sigma == 0, jnp.float32(INVERSION_ZERO_SIGMA), sigma)
    denoised = denoiser(x, jnp.full((x.shape[0],), at, jnp.float32))
    shape = getattr(denoised, "shape", None)
    if shape is None or tuple(shape) != x.shape:
        raise ValueError(
            f"inverted_latents: denoiser must return an array of the latent's shape {x.shape}, "
            f"got {'a ' + type(denoised).__name__ if shape is None else tuple(shape)}"
        )
    return (x - jnp.asarray(denoised).astype(jnp.float32)) / at


def euler_step(denoiser: Denoiser, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """`x + (sigma_next - sigma) * (x - D(x, sigma)) / sigma`."""
    return x + (sigma_next - sigma) * _slope(denoiser, x, sigma)


def heun_step(denoiser: Denoiser, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """Karras et al. (2022), Algorithm 1: an Euler predictor, then the mean of both slopes."""
    h = sigma_next - sigma
    d = _slope(denoiser, x, sigma)
    d_next = _slope(denoiser, x + h * d, sigma_next)
    return x + h * (d + d_next) / 2


_STEPS = {"euler": euler_step, "heun": heun_step}


@functools.partial(jax.jit, static_argnames=("statics",))
def _inverted(arrays: list[jax.Array], x: jax.Array, sigmas: jax.Array, *, statics: _Statics) -> jax.Array:
    """The `(n * B, ...)` trajectory; `x` is the latent as given, `sigmas` float32 with n >= 1."""
    denoiser = join_denoiser(arrays, statics.denoiser)
    step = _STEPS[statics.solver]
    fmt = statics.latent_format
    x0 = x.astype(jnp.float32)
    state0 = x0 if fmt is None else fmt.process_in(x0)

    def advance(state, sigma_pair):
        sigma, sigma_next = sigma_pair
        # A repeated sigma (long schedules repeat table entries) is a step of length 0: skip the model.
        new = jax.lax.cond(
            sigma_next == sigma, lambda s: s, lambda s: step(denoiser, s, sigma, sigma_next), state
        )
        out = new if fmt is None else fmt.process_out(new)
        return new, out.astype(statics.out_dtype)

    _, later = jax.lax.scan(advance, state0, (sigmas[:-1], sigmas[1:]))
    z = jnp.concatenate([x[None], later])  # entry 0: the latent itself, bit for bit
    return z.reshape((-1, *x.shape[1:]))


def inverted_latents(
    denoiser: Denoiser,
    latent: ArrayLike,
    sigmas: ArrayLike,
    *,
    solver: str = "euler",
    latent_format: LatentFormat | None = None,
) -> jax.Array:
    """The latent's probability-flow ODE trajectory at each sigma, least noise first.

    Entry `i` (rows `i*B` to `i*B + B - 1`) is the ODE state at `sigmas[i]`, started from the
    latent itself at `sigmas[0]`: what the denoiser would carry back to the latent by sampling
    from `sigmas[i]` down with the same solver. The layout is `noised_latents`'s, so anything
    that takes the noised batch takes this one.

    Solvers, with `d(x, s) = (x - D(x, s)) / s` and `h = sigmas[i+1] - sigmas[i]`:

    - `"euler"`: `x_{i+1} = x_i + h * d(x_i, sigmas[i])` (one denoiser call a step; first order).
    - `"heun"`: `x_{i+1} = x_i + h * (d(x_i, sigmas[i]) + d(x_i + h d(x_i, sigmas[i]), sigmas[i+1])) / 2`
      (Karras et al. 2022, two calls a step; second order).

    **Sigma 0.** The slope is 0/0 at sigma 0, so a step that starts there (a first sigma of 0)
    evaluates the denoiser at sigma `1e-4` (`INVERSION_ZERO_SIGMA`) and uses that slope over
    the whole step: the latent stays at sigma 0 (entry 0 is still the latent) and no sigma is
    moved, unlike ComfyUI_Noise's Unsampler, which adds 1e-4 to every sigma. A step between two
    equal sigmas leaves the state unchanged and calls no denoiser.

    **Model space.** Pass the model's `latent_format` (as `mode="model"` does for noise) to
    run the ODE in the model's space (`process_in`) and get LATENTs back (`process_out`).

    **Arguments:**

    - `denoiser`: `D(x, sigma)`, k-diffusion's convention: float32 `(B, ...)` latents and a
      `(B,)` float32 sigma, returning the denoised latents of the same shape. Traced with JAX:
      a pure function (compiled once per function object), or a pytree such as a
      `jax.tree_util.Partial` over parameters (its arrays are traced: new values do not
      recompile). E.g. `denoiser_from_model(apply_fn, model_sampling)`.
    - `latent`: the `(B, C, ...)` latent (any batch and rank >= 2; float16 and bfloat16 are
      computed in float32 and returned in their own dtype).
    - `sigmas`: 1-D, ascending (equal neighbours allowed), non-negative: the node's sigmas.
    - `solver`: `"euler"` or `"heun"` (static).
    - `latent_format`: a `LatentFormat`, or `None` to run in the latent's own space.

    **Returns:** the `(len(sigmas) * B, C, ...)` trajectory, step-major, in the latent's dtype.
    """
    fn = "inverted_latents"
    solver = check_choice(fn, "solver", solver, INVERSION_SOLVERS)
    if not callable(denoiser):
        raise ValueError(
            f"{fn}: denoiser must be callable as D(x, sigma) -> denoised x, got {type(denoiser).__name__}"
        )
    latent = check_latent(fn, latent)
    sigmas = check_sigmas(fn, sigmas).astype(jnp.float32)
    if latent_format is not None and not isinstance(latent_format, LatentFormat):
        raise ValueError(
            f"{fn}: latent_format must be a LatentFormat or None, got {type(latent_format).__name__}"
        )
    if not isinstance(sigmas, jax.core.Tracer):
        values = np.asarray(sigmas)
        if values.size and values.min() < 0:
            raise ValueError(f"{fn}: sigmas must be non-negative, got {values.min()} at {values.argmin()}")
        down = np.flatnonzero(np.diff(values) < 0)
        if down.size:
            i = int(down[0])
            raise ValueError(
                f"{fn}: sigmas must be ascending (least noise first), got {values[i]} then "
                f"{values[i + 1]} at index {i + 1}; flip descending sigmas first"
            )
    if sigmas.shape[0] == 0:
        return jnp.zeros((0, *latent.shape[1:]), latent.dtype)
    arrays, denoiser_static = split_denoiser(denoiser)
    statics = _Statics(denoiser_static, solver, latent_format, latent.dtype)
    return _inverted(arrays, latent, sigmas, statics=statics)
