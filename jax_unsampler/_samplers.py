"""`sample`: ComfyUI's samplers (its k-diffusion code) in JAX.

The steps are `_steps.py`'s, run by `_sampling.integrate`; this module checks the arguments
and calls one jitted kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._denoiser_args import Denoiser, DenoiserStatic, denoiser_errors, join_denoiser, split_denoiser
from ._keys import canonical_key
from ._latent_format import LatentFormat
from ._model_sampling import ModelSampling, noise_scaling_of, snr_offset_sigma
from ._names import MIXING_SAMPLERS, NOISE_SCALINGS, SAMPLE_SAMPLERS, SAVES
from ._sampling import Noise, Run, integrate
from ._steps import SAMPLER_STEPS, sampler_options
from ._validation import (
    check_choice,
    check_denoiser,
    check_latent,
    check_latent_format,
    check_sigmas,
    host_values,
    is_concrete,
)

__all__ = ["MIXING_SAMPLERS", "SAMPLE_SAMPLERS", "sample"]

NoiseFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`noise(sigma, sigma_next) -> standard normal noise of the latent's shape`."""


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


def default_noise_scaling(
    fn: str, denoiser: object, noise_scaling: str | None, ms: ModelSampling | None = None
) -> str:
    if noise_scaling is None:
        default = "eps" if ms is None else noise_scaling_of(ms.model_type)
        noise_scaling = getattr(denoiser, "noise_scaling", default)
    return check_choice(fn, "noise_scaling", noise_scaling, NOISE_SCALINGS)


def check_model_sampling(fn: str, denoiser: object, model_sampling: object) -> ModelSampling | None:
    """`model_sampling`, or the denoiser's own (`denoiser_from_model`), or None."""
    if model_sampling is None:
        own = getattr(denoiser, "model_sampling", None)
        return own if isinstance(own, ModelSampling) else None
    if not isinstance(model_sampling, ModelSampling):
        raise TypeError(
            f"{fn}: model_sampling must be a jax_unsampler.ModelSampling (model_sampling(...) or "
            f"preset(...).model_sampling) or None, got {type(model_sampling).__name__}"
        )
    return model_sampling


def check_noise(fn: str, noise: object) -> NoiseFn | None:
    """`noise`: None or a callable `noise(sigma, sigma_next)` (its output is checked in the loop)."""
    if noise is not None and not callable(noise):
        raise TypeError(
            f"{fn}: noise must be a callable noise(sigma, sigma_next) -> standard normal noise of the "
            f"latent's shape, or None, got {type(noise).__name__}"
        )
    return noise


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
    options: Mapping[str, Any] | None = None,
    noise: NoiseFn | None = None,
    model_sampling: ModelSampling | None = None,
    save: str = "final",
) -> jax.Array:
    """Sample along `sigmas` with one of ComfyUI's samplers (no mixing).

    Each sampler is ComfyUI's function of that name (`comfy/k_diffusion/sampling.py` and the
    modules it calls), run as one `lax.scan`: see the samplers' table in the docs.

    **Arguments:**

    - `denoiser`: `denoiser(x, sigma) -> denoised`, `sigma` of shape `(B,)`, returning `x`'s
      shape (e.g. a Flax NNX module, or `denoiser_from_model`), read as the denoiser rule says
      (docs/denoisers.md).
    - `latent_or_noise`: the `(B, ...)` start at `sigmas[0]`, as ComfyUI hands it to the
      sampler (`starting_latent` makes it as ComfyUI does: the model's noise scaling of keyed
      noise at `sigmas[0]`, text-to-image or img2img); finite.
    - `sigmas`: descending noise levels (noisiest first), as KSampler gives them (usually ending
      in 0), at least two.
    - `sampler`: one of `SAMPLE_SAMPLERS` (ComfyUI's names; static).
    - `key`: the PRNG key of the sampler's fresh noise, where it draws any and `noise` is not
      given: draw `n` of step `i`, item `b` comes from `fold_in(fold_in(fold_in(fold_in(key,
      0), 1), i), batch_index[b])`, folded once more with `n` for `n >= 1`.
    - `noise_scaling`: `"eps"` or `"const"` (rectified flow: ComfyUI's `_RF` forms and how
      noise is added); default: the denoiser's own when it comes from `denoiser_from_model`,
      else the model sampling's, else `"eps"`.
    - `batch_index`: each item's index for its noise (as `noised_latents`), default
      `0..B-1`: item `b` sampled alone with `batch_index=[b]` equals item `b` of the batch.
    - `latent_format`: a `LatentFormat` to sample in the model's space (`process_in` before,
      `process_out` after), or `None` for the latent's own space.
    - `options`: the sampler's options by ComfyUI's names (e.g. `{"eta": 0.5}`), static
      Python values; the others keep ComfyUI's defaults. Unknown names are refused.
    - `noise`: `noise(sigma, sigma_next) -> (B, ...)` standard normal noise (k-diffusion's
      `noise_sampler`), traceable; when given, no key is needed. Unused by the samplers that
      draw none.
    - `model_sampling`: the model's `ModelSampling` (e.g. `preset("sd3").model_sampling`), read
      by the samplers that need it (a flow model's first sigma off 1, as ComfyUI's
      `offset_first_sigma_for_snr`; sa_solver's tau interval, for which it is required);
      default: the denoiser's, when it comes from `denoiser_from_model`.
    - `save`: what the loop keeps (diffrax's `SaveAt`), one of `SAVES`: `"final"`, the last
      latent; `"trajectory"`, every step's, `(len(sigmas) * B, ...)` step-major, entry 0 the
      start, as `inverted_latents` lays its own (the samplers that step along the sigmas).

    **Returns:** the sampled latent (or its trajectory), in `latent_or_noise`'s dtype: computed
    in float32, or in float64 for a float64 latent with x64 on (`jax_enable_x64`).
    """
    fn = "sample"
    sampler = check_choice(fn, "sampler", sampler, SAMPLE_SAMPLERS)
    opts = sampler_options(fn, sampler, options)
    save = check_choice(fn, "save", save, SAVES)
    if save == "trajectory" and not SAMPLER_STEPS[sampler].fixed_grid:
        raise ValueError(
            f"{fn}: save='trajectory' keeps a state at each of the given sigmas, and sampler "
            f"{sampler!r} chooses its own steps; use save='final', or a sampler of MIXING_SAMPLERS"
        )
    check_denoiser(fn, denoiser)
    ms = check_model_sampling(fn, denoiser, model_sampling)
    scaling = default_noise_scaling(fn, denoiser, noise_scaling, ms)
    latent = check_latent(fn, latent_or_noise, what="latent_or_noise")
    s = check_sigmas(fn, sigmas, order="descending", min_len=2)
    check_latent_format(fn, latent_format)
    noise = check_noise(fn, noise)
    ids = item_ids(fn, batch_index, latent.shape[0])
    if noise is None and SAMPLER_STEPS[sampler].noise and draws_noise(s):
        key = required_key(fn, key, f"sampler {sampler!r} draws fresh noise; or pass noise=")
    else:
        key = None
    trajectory = save == "trajectory"
    if latent.size == 0:
        rows = s.shape[0] * latent.shape[0] if trajectory else latent.shape[0]
        return jnp.zeros((rows, *latent.shape[1:]), latent.dtype)
    dtype = compute_dtype(latent)
    if dtype != jnp.float32:  # the sigmas as given, not rounded to float32
        s = jnp.asarray(sigmas, dtype)
    x = latent.astype(dtype)
    arrays, denoiser_static = split_denoiser(fn, denoiser, x)
    run = Run(fn, sampler, scaling, save_all=trajectory, latent_format=latent_format, options=opts)
    with denoiser_errors(fn):
        out = _sample_kernel(
            arrays, x, s, key, ids, noise, snr_offset_sigma(ms), ms,
            statics=_Statics(denoiser_static, run, latent.dtype),
        )  # fmt: skip
    return out.astype(latent.dtype)


def compute_dtype(latent: jax.Array) -> Any:
    """float64 for a float64 latent (only with x64 on), else float32 (parity's precision)."""
    return jnp.float64 if latent.dtype == jnp.float64 else jnp.float32


class _Statics(NamedTuple):
    denoiser: DenoiserStatic
    run: Run
    out_dtype: Any


@functools.partial(jax.jit, static_argnames=("statics", "noise"))
def _sample_kernel(
    arrays: list[jax.Array],
    x: jax.Array,
    sigmas: jax.Array,
    key: jax.Array | None,
    ids: jax.Array,
    noise: NoiseFn | None,
    first_sigma: jax.Array | None,
    ms: ModelSampling | None,
    *,
    statics: _Statics,
) -> jax.Array:
    denoiser = join_denoiser(arrays, statics.denoiser)
    return integrate(
        statics.run,
        denoiser,
        x,
        sigmas,
        noise=Noise(key=key, item_ids=ids, fn=noise),
        first_sigma=first_sigma,
        model_sampling=ms,
        out_dtype=statics.out_dtype,
    )
