"""Inversion: a latent carried up the probability-flow ODE, every intermediate state kept.

With a k-diffusion denoiser `D(x, sigma)` (the model's estimate of the clean latent), the ODE
`dx/dsigma = (x - D(x, sigma)) / sigma` links a latent at a low sigma to the noisy latent the
model would denoise back into it. Solving it towards higher sigmas, least noise first, with the
samplers' own steps (`_steps.py`, run by `_sampling.integrate`), gives the model-consistent
counterpart of the noised batch, step-major, entry `i` at `sigmas[i]`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._denoiser_args import Denoiser, DenoiserStatic, join_denoiser, split_denoiser
from ._latent_format import LatentFormat
from ._names import INVERSION_SAMPLERS
from ._sampling import Run, integrate
from ._validation import (
    check_choice,
    check_denoiser,
    check_latent,
    check_latent_format,
    check_sigmas,
    renamed_argument,
)


class _Statics(NamedTuple):
    """What is compiled into the kernel: the denoiser's non-array parts and the settings."""

    denoiser: DenoiserStatic
    run: Run
    out_dtype: Any


@functools.partial(jax.jit, static_argnames=("statics",))
def _inverted(arrays: list[jax.Array], x: jax.Array, sigmas: jax.Array, *, statics: _Statics) -> jax.Array:
    """The `(n * B, ...)` trajectory, written in place; `x` is the latent as given, n >= 1."""
    denoiser = join_denoiser(arrays, statics.denoiser)
    return integrate(statics.run, denoiser, x.astype(jnp.float32), sigmas, out_dtype=statics.out_dtype)


@renamed_argument("solver", "sampler", since="0.3.0")
def inverted_latents(
    denoiser: Denoiser,
    latent: ArrayLike,
    sigmas: ArrayLike,
    *,
    sampler: str = "euler",
    latent_format: LatentFormat | None = None,
) -> jax.Array:
    """The latent's probability-flow ODE trajectory at each sigma, least noise first.

    Entry `i` (rows `i*B` to `i*B + B - 1`) is the ODE state at `sigmas[i]`, started from the
    latent itself at `sigmas[0]`: what the denoiser would carry back to the latent by sampling
    from `sigmas[i]` down with the same sampler. The batch is laid along the ascending `sigmas`
    (least noise first, the node's order); `iterative_mixing_sample` takes its steps in the
    other order (flip them first).

    Samplers, with `d(x, s) = (x - D(x, s)) / s` and `h = sigmas[i+1] - sigmas[i]` (the steps of
    `sample`, run upwards):

    - `"euler"`: `x_{i+1} = x_i + h d(x_i, sigmas[i])` (one denoiser call a step; first order).
    - `"heun"`: `x_{i+1} = x_i + h (d(x_i, sigmas[i]) + d(x_i + h d(x_i, sigmas[i]), sigmas[i+1])) / 2`
      (Karras et al. 2022, two calls a step; second order).
    - `"dpmpp_2m"`: DPM-Solver++(2M) (one call a step, second order from the second step; exact
      for a denoiser that does not depend on x).

    **Sigma 0.** The slope is 0/0 at sigma 0, so a step that starts there (a first sigma of 0)
    evaluates the denoiser at sigma `1e-4` (`INVERSION_ZERO_SIGMA`) and uses that slope over
    the whole step (an Euler step, whatever the sampler): the latent stays at sigma 0 (entry 0
    is still the latent) and no sigma is moved, unlike ComfyUI_Noise's Unsampler, which adds
    1e-4 to every sigma. A step between two equal sigmas leaves the state unchanged and calls
    no denoiser.

    **Model space.** Pass the model's `latent_format` (as `mode="model"` does for noise) to
    run the ODE in the model's space (`process_in`) and get LATENTs back (`process_out`).

    **Arguments:**

    - `denoiser`: `D(x, sigma)`, k-diffusion's convention: float32 `(B, ...)` latents and a
      `(B,)` float32 sigma, returning the denoised latents of the same shape. Its arrays are
      traced (new parameters do not recompile and are never stale), e.g.
      `denoiser_from_model(apply_fn, model_sampling, params=params)`.
    - `latent`: the `(B, C, ...)` latent (any batch and rank >= 2, finite; float16 and bfloat16
      are computed in float32 and returned in their own dtype).
    - `sigmas`: 1-D, ascending (equal neighbours allowed), non-negative: the node's sigmas.
    - `sampler`: one of `INVERSION_SAMPLERS` (static); `solver=` is its former name
      (deprecated, warns).
    - `latent_format`: a `LatentFormat`, or `None` to run in the latent's own space.

    **Returns:** the `(len(sigmas) * B, C, ...)` trajectory, step-major, in the latent's dtype
    (written in place: the result is the only copy).
    """
    fn = "inverted_latents"
    sampler = check_choice(fn, "sampler", sampler, INVERSION_SAMPLERS)
    check_denoiser(fn, denoiser)
    x: jax.Array = check_latent(fn, latent)
    s: jax.Array = check_sigmas(fn, sigmas, order="ascending")
    check_latent_format(fn, latent_format)
    if s.shape[0] == 0 or x.size == 0:
        return jnp.zeros((s.shape[0] * x.shape[0], *x.shape[1:]), x.dtype)
    arrays, denoiser_static = split_denoiser(denoiser)
    run = Run(fn, sampler, save_all=True, skip_equal=True, latent_format=latent_format)
    return _inverted(arrays, x, s, statics=_Statics(denoiser_static, run, x.dtype))
