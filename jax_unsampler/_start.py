"""The starting latent of a sampling run, as ComfyUI's KSampler makes it from noise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._model_sampling import ModelSampling, noise_scaling_of
from ._validation import check_latent, check_sigmas


def starting_latent(
    key: ArrayLike | None,
    latent: ArrayLike,
    sigmas: ArrayLike,
    model_sampling: ModelSampling,
    *,
    noise: ArrayLike | None = None,
    batch_index: ArrayLike | None = None,
) -> jax.Array:
    """What `sample` starts from: `latent` noised to `sigmas[0]`, as ComfyUI's KSampler does.

    ComfyUI applies the model sampling's `noise_scaling` at the first sigma: for the
    eps-noised types (EPS, V, EDM, X0, Cosmos) `latent + noise * sigma`, or
    `latent + noise * sqrt(1 + sigma^2)` when `sigmas[0]` is the model's `sigma_max` (its
    `max_denoise`, within a relative 1e-5, or above; not for Cosmos); for flow models (FLOW,
    FLUX) `sigma * noise + (1 - sigma) * latent`. Text-to-image: pass a latent of zeros and
    the full schedule; img2img: the encoded image and a schedule cut by `denoise`.

    **Arguments:**

    - `key`: a PRNG key; item `b`'s noise is `jax.random.normal(fold_in(key, batch_index[b]),
      latent.shape[1:])` (pinned). Not needed when `noise` is given.
    - `latent`: `(B, ...)`, the clean latent (zeros for text-to-image).
    - `sigmas`: the run's sigmas, descending (only `sigmas[0]` is read).
    - `model_sampling`: the model's `ModelSampling` (e.g. `preset("sd15").model_sampling`).
    - `noise`: standard normal noise of the latent's shape, instead of the keyed draw.
    - `batch_index`: optional `B` item ids (ComfyUI's LATENT `batch_index`); default `0..B-1`.

    **Returns:** the starting latent, in the latent's dtype, for `sample(denoiser, it, sigmas)`.
    """
    from ._samplers import item_ids, required_key

    fn = "starting_latent"
    x = check_latent(fn, latent)
    s = check_sigmas(fn, sigmas, order="descending", min_len=1)
    if not isinstance(model_sampling, ModelSampling):
        raise TypeError(
            f"{fn}: model_sampling must be a jax_unsampler.ModelSampling (model_sampling(...) or "
            f"preset(...).model_sampling), got {type(model_sampling).__name__}"
        )
    ids = item_ids(fn, batch_index, x.shape[0])
    if noise is None:
        k = required_key(fn, key, "the starting noise is drawn from it; or pass noise=")
        eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:]))(ids)
    else:
        eps = check_latent(fn, noise, what="noise")
        if eps.shape != x.shape:
            raise ValueError(
                f"{fn}: noise must have the latent's shape {tuple(x.shape)}, got {tuple(eps.shape)}"
            )
    sigma = s[0]
    eps, xf = eps.astype(jnp.float32), x.astype(jnp.float32)
    if noise_scaling_of(model_sampling.model_type) == "const":
        out = sigma * eps + (1.0 - sigma) * xf
    else:
        top = model_sampling.sigma_max.astype(jnp.float32)
        at_top = (jnp.abs(top - sigma) <= 1e-5 * jnp.maximum(jnp.abs(top), jnp.abs(sigma))) | (sigma > top)
        if model_sampling.model_type == "FLOW_COSMOS":  # its noise_scaling has no max_denoise
            at_top = jnp.asarray(False)
        scale = jnp.where(at_top, jnp.sqrt(1.0 + sigma**2), sigma)
        out = xf + eps * scale
    return out.astype(x.dtype)
