"""Inversion: a latent carried up the probability-flow ODE, every intermediate state kept.

With a k-diffusion denoiser `D(x, sigma)` (the model's estimate of the clean latent), the ODE
`dx/dsigma = (x - D(x, sigma)) / sigma` links a latent at a low sigma to the noisy latent the
model would denoise back into it. Solving it towards higher sigmas, least noise first, with the
samplers' own steps (`_steps.py`, run by `_sampling.integrate`), gives the model-consistent
counterpart of the noised batch, step-major, entry `i` at `sigmas[i]`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._denoiser_args import Denoiser, DenoiserStatic, denoiser_errors, join_denoiser, split_denoiser
from ._latent_format import LatentFormat
from ._names import INVERSION_SAMPLERS
from ._samplers import compute_dtype
from ._sampling import Run, integrate
from ._steps import sampler_options
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
    dtype = compute_dtype(x)
    return integrate(
        statics.run, denoiser, x.astype(dtype), sigmas.astype(dtype), out_dtype=statics.out_dtype
    )


@renamed_argument("solver", "sampler", since="0.3.0")
def inverted_latents(
    denoiser: Denoiser,
    latent: ArrayLike,
    sigmas: ArrayLike,
    *,
    sampler: str = "euler",
    latent_format: LatentFormat | None = None,
    options: Mapping[str, Any] | None = None,
) -> jax.Array:
    """The latent's probability-flow ODE trajectory at each sigma, least noise first.

    Entry `i` (rows `i*B` to `i*B + B - 1`) is the ODE state at `sigmas[i]`, started from the
    latent itself at `sigmas[0]`: what the denoiser would carry back to the latent by sampling
    from `sigmas[i]` down with the same sampler. The batch is laid along the ascending `sigmas`
    (least noise first, the node's order); `iterative_mixing_sample` takes its steps in the
    other order (flip them first).

    Samplers: every one of `INVERSION_SAMPLERS` (ComfyUI's deterministic samplers that step
    along the given sigmas), its steps as `sample` takes them, run upwards; e.g. with
    `d(x, s) = (x - D(x, s)) / s` and `h = sigmas[i+1] - sigmas[i]`, `"euler"` is
    `x_{i+1} = x_i + h d(x_i, sigmas[i])` (the docs' samplers table gives each one's denoiser
    calls a step and order).

    **Sigma 0.** The slope is 0/0 at sigma 0, so a step that starts there (a first sigma of 0)
    evaluates the denoiser at sigma `1e-4` (`INVERSION_ZERO_SIGMA`): euler, heun and dpmpp_2m
    take their own step from there with that slope (dpmpp_2m keeps that denoised latent as its
    history); the others, whose formulas read `log sigma` or a midpoint, take the Euler step
    and start their history at the next step. The latent stays at sigma 0 (entry 0 is still
    the latent) and no sigma is moved, unlike ComfyUI_Noise's Unsampler, which adds 1e-4 to
    every sigma. A step between two equal sigmas leaves the state unchanged and calls no
    denoiser.

    **Model space.** Pass the model's `latent_format` (as `mode="model"` does for noise) to
    run the ODE in the model's space (`process_in`) and get LATENTs back (`process_out`).

    **Arguments:**

    - `denoiser`: `D(x, sigma)`, k-diffusion's convention: float32 `(B, ...)` latents and a
      `(B,)` float32 sigma, returning the denoised latents of the same shape, read as the
      denoiser rule says (docs/denoisers.md), e.g.
      `denoiser_from_model(apply_fn, model_sampling, params=params)`.
    - `latent`: the `(B, C, ...)` latent (any batch and rank >= 2, finite; float16 and bfloat16
      are computed in float32 and returned in their own dtype).
    - `sigmas`: 1-D, ascending (equal neighbours allowed), non-negative: the node's sigmas.
    - `sampler`: one of `INVERSION_SAMPLERS` (static); `solver=` is its former name
      (deprecated, warns).
    - `latent_format`: a `LatentFormat`, or `None` to run in the latent's own space.
    - `options`: the sampler's options by ComfyUI's names (static), as for `sample`.

    **Returns:** the `(len(sigmas) * B, C, ...)` trajectory, step-major, in the latent's dtype
    (computed in float32, or in float64 for a float64 latent with x64 on; written in place:
    the result is the only copy).
    """
    fn = "inverted_latents"
    sampler = check_choice(fn, "sampler", sampler, INVERSION_SAMPLERS)
    opts = sampler_options(fn, sampler, options)
    check_denoiser(fn, denoiser)
    x: jax.Array = check_latent(fn, latent)
    s: jax.Array = check_sigmas(fn, sigmas, order="ascending")
    check_latent_format(fn, latent_format)
    if s.shape[0] == 0 or x.size == 0:
        return jnp.zeros((s.shape[0] * x.shape[0], *x.shape[1:]), x.dtype)
    if compute_dtype(x) != jnp.float32:  # the sigmas as given, not rounded to float32
        s = jnp.asarray(sigmas, compute_dtype(x))
    arrays, denoiser_static = split_denoiser(fn, denoiser, x.astype(compute_dtype(x)))
    run = Run(
        fn, sampler, save_all=True, skip_equal=True, zero_rule=True, latent_format=latent_format,
        options=opts,
    )  # fmt: skip
    with denoiser_errors(fn):
        return _inverted(arrays, x, s, statics=_Statics(denoiser_static, run, x.dtype))
