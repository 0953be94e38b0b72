"""`sample`: ComfyUI's Euler, Heun, DPM++ 2M and LCM samplers (its k-diffusion code) in JAX.

The steps are `_steps.py`'s, run by `_sampling.integrate`; this module checks the arguments
and calls one jitted kernel.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._denoiser_args import Denoiser, DenoiserStatic, join_denoiser, split_denoiser
from ._keys import canonical_key
from ._latent_format import LatentFormat
from ._names import MIXING_SAMPLERS, NOISE_SCALINGS
from ._sampling import Noise, Run, integrate
from ._steps import SAMPLER_STEPS
from ._validation import (
    check_choice,
    check_denoiser,
    check_latent,
    check_latent_format,
    check_sigmas,
    host_values,
    is_concrete,
)

__all__ = ["MIXING_SAMPLERS", "sample"]


def draws_noise(sigmas: jax.Array) -> bool:
    """Whether LCM draws noise: some step ends above 0 (always assumed for traced sigmas)."""
    return not is_concrete(sigmas) or bool((host_values(sigmas)[1:] > 0).any())


def item_ids(fn: str, batch_index: ArrayLike | None, batch: int) -> jax.Array:
    """`batch_index` as uint32 item ids (the noise functions' rule and messages)."""
    from ._noise import _item_ids

    return _item_ids(fn, batch_index, batch)


def required_key(fn: str, key: Any, why: str) -> jax.Array:
    if key is None:
        raise ValueError(f"{fn}: key is required here ({why}): pass key= (e.g. jax.random.key(0))")
    return canonical_key(fn, key)


def default_noise_scaling(fn: str, denoiser: object, noise_scaling: str | None) -> str:
    if noise_scaling is None:
        noise_scaling = getattr(denoiser, "noise_scaling", "eps")
    return check_choice(fn, "noise_scaling", noise_scaling, NOISE_SCALINGS)


def sample(
    denoiser: Denoiser,
    latent_or_noise: ArrayLike,
    sigmas: ArrayLike,
    *,
    sampler: str,
    key: jax.Array | None = None,
    noise_scaling: str | None = None,
    batch_index: ArrayLike | None = None,
    latent_format: LatentFormat | None = None,
) -> jax.Array:
    """Sample along `sigmas` with ComfyUI's Euler, Heun, DPM++ 2M or LCM sampler (no mixing).

    The steps are those of ComfyUI's `comfy/k_diffusion/sampling.py` (`sample_euler` without
    churn, `sample_heun`, `sample_dpmpp_2m`, `sample_lcm`), run as one `lax.scan`.

    **Arguments:**

    - `denoiser`: `denoiser(x, sigma) -> denoised`, `sigma` of shape `(B,)`, returning `x`'s
      shape (e.g. from `denoiser_from_model`). Its arrays are traced (see "Denoisers" in the
      docs): new parameters do not recompile and are never stale.
    - `latent_or_noise`: the `(B, ...)` start at `sigmas[0]`, as ComfyUI hands it to the
      sampler (for text-to-image: the model's noise scaling of noise at `sigmas[0]`); finite.
    - `sigmas`: descending noise levels (noisiest first), as KSampler gives them (usually ending
      in 0), at least two.
    - `sampler`: one of `MIXING_SAMPLERS`: `"euler"`, `"heun"`, `"dpmpp_2m"` or `"lcm"` (static).
    - `key`: the PRNG key of LCM's fresh noise: step `i`, item `b` draws from
      `fold_in(fold_in(fold_in(fold_in(key, 0), 1), i), batch_index[b])`; required for `"lcm"`
      when some `sigmas[i+1] > 0` (always when `sigmas` are traced).
    - `noise_scaling`: how LCM re-noises, `"eps"` (`x + sigma * eps`) or `"const"` (rectified
      flow); default: the denoiser's own when it comes from `denoiser_from_model`, else `"eps"`.
    - `batch_index`: each item's index for its noise (as `noised_latents`), default
      `0..B-1`: item `b` sampled alone with `batch_index=[b]` equals item `b` of the batch.
    - `latent_format`: a `LatentFormat` to sample in the model's space (`process_in` before,
      `process_out` after), or `None` for the latent's own space.

    **Returns:** the sampled latent, `latent_or_noise`'s shape and dtype (computed in float32).
    """
    fn = "sample"
    sampler = check_choice(fn, "sampler", sampler, MIXING_SAMPLERS)
    check_denoiser(fn, denoiser)
    scaling = default_noise_scaling(fn, denoiser, noise_scaling)
    latent = check_latent(fn, latent_or_noise, what="latent_or_noise")
    s = check_sigmas(fn, sigmas, order="descending", min_len=2)
    check_latent_format(fn, latent_format)
    ids = item_ids(fn, batch_index, latent.shape[0])
    if SAMPLER_STEPS[sampler].random and draws_noise(s):
        key = required_key(fn, key, "sampler 'lcm' draws fresh noise")
    else:
        key = None
    if latent.size == 0:
        return jnp.zeros(latent.shape, latent.dtype)
    arrays, denoiser_static = split_denoiser(denoiser)
    run = Run(fn, sampler, scaling, latent_format=latent_format)
    out = _sample_kernel(
        arrays, latent.astype(jnp.float32), s, key, ids, statics=_Statics(denoiser_static, run)
    )
    return out.astype(latent.dtype)


class _Statics(NamedTuple):
    denoiser: DenoiserStatic
    run: Run


@functools.partial(jax.jit, static_argnames=("statics",))
def _sample_kernel(
    arrays: list[jax.Array],
    x: jax.Array,
    sigmas: jax.Array,
    key: jax.Array | None,
    ids: jax.Array,
    *,
    statics: _Statics,
) -> jax.Array:
    denoiser = join_denoiser(arrays, statics.denoiser)
    return integrate(statics.run, denoiser, x, sigmas, noise=Noise(key=key, item_ids=ids))
