"""A network that predicts what a ComfyUI model type predicts, turned into a denoiser.

ComfyUI's `BaseModel.apply_model` scales the sampler's latent with the model type's
`calculate_input`, hands the network that input and `model_sampling.timestep(sigma)`, and turns
the network's output into a denoised latent with `calculate_denoised`. `denoiser_from_model`
does the same in JAX, so a Flax UNet or DiT plugs into `sample` and `iterative_mixing_sample`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ._model_sampling import ModelSampling, noise_scaling_of

# Model type -> ComfyUI's prediction class (the second base of its ModelSampling class).
PREDICTIONS = {
    "EPS": "eps",
    "V_PREDICTION": "v",
    "V_PREDICTION_EDM": "v",
    "V_PREDICTION_CONTINUOUS": "v",
    "STABLE_CASCADE": "eps",
    "EDM": "edm",
    "FLOW": "const",
    "FLUX": "const",
    "IMG_TO_IMG": "x0",
    "FLOW_COSMOS": "cosmos_rflow",
}


def _per_item(sigma: jax.Array, ndim: int) -> jax.Array:
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1))


def calculate_input(prediction: str, sigma: jax.Array, x: jax.Array, sigma_data: jax.Array) -> jax.Array:
    """ComfyUI's `calculate_input` for a prediction class; `sigma` of shape `(B,)`."""
    if prediction in ("const", "x0"):
        return x
    if prediction == "cosmos_rflow":
        return x * (1.0 - _per_item(sigma / (sigma + 1), x.ndim))
    s = _per_item(sigma, x.ndim)
    return x / jnp.sqrt(s**2 + sigma_data**2)


def calculate_denoised(
    prediction: str, sigma: jax.Array, output: jax.Array, x: jax.Array, sigma_data: jax.Array
) -> jax.Array:
    """ComfyUI's `calculate_denoised` for a prediction class; `sigma` of shape `(B,)`."""
    if prediction == "x0":
        return output
    if prediction == "cosmos_rflow":
        t = _per_item(sigma / (sigma + 1), x.ndim)
        return x * (1.0 - t) - output * t
    s = _per_item(sigma, x.ndim)
    if prediction in ("eps", "const"):
        return x - output * s
    total = s**2 + sigma_data**2
    skip = x * sigma_data**2 / total
    out = output * s * sigma_data / jnp.sqrt(total)
    return skip - out if prediction == "v" else skip + out


class ModelDenoiser(struct.PyTreeNode):
    """A denoiser `(x, sigma, *args, **kwargs) -> denoised` made by `denoiser_from_model`.

    **Attributes:**

    - `apply_fn`: the network (static: part of the compiled program),
      `apply_fn(params, model_input, timestep, *args, **kwargs)` when `params` is given, else
      `apply_fn(model_input, timestep, *args, **kwargs)`.
    - `model_sampling`: the model's `ModelSampling`.
    - `params`: the network's parameters (a pytree of arrays, traced: new values reuse the
      compiled program), or None.
    - `noise_scaling`: ComfyUI's noise scaling of the model type (`"eps"` or `"const"`), which
      `sample(..., sampler="lcm")` uses to re-noise.
    """

    apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
    model_sampling: ModelSampling
    params: Any = None

    @property
    def noise_scaling(self) -> str:
        return noise_scaling_of(self.model_sampling.model_type)

    def __call__(self, x: jax.Array, sigma: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        ms = self.model_sampling
        prediction = PREDICTIONS[ms.model_type]
        sigma = jnp.asarray(sigma, jnp.float32).reshape(-1)
        sigma = jnp.broadcast_to(sigma, (x.shape[0],))
        model_input = calculate_input(prediction, sigma, x, ms.sigma_data)
        timestep = ms.timestep(sigma).astype(jnp.float32)
        lead = () if self.params is None else (self.params,)
        output = jnp.asarray(self.apply_fn(*lead, model_input, timestep, *args, **kwargs), jnp.float32)
        if output.shape != x.shape:
            raise ValueError(
                f"denoiser_from_model: apply_fn returned shape {output.shape}, "
                f"expected the latent's {x.shape}"
            )
        return calculate_denoised(prediction, sigma, output, x, ms.sigma_data)


def denoiser_from_model(
    apply_fn: Callable[..., Any], model_sampling: ModelSampling, *, params: Any = None
) -> ModelDenoiser:
    """A k-diffusion denoiser from a network that predicts what a ComfyUI model type predicts.

    `denoiser(x, sigma, *args, **kwargs)` computes, as ComfyUI's `BaseModel.apply_model`:
    `calculate_denoised(sigma, apply_fn(calculate_input(sigma, x), timestep(sigma), *args,
    **kwargs), x)`, with the prediction class ComfyUI pairs with the model type:

    - EPS, STABLE_CASCADE: input `x / sqrt(sigma^2 + sigma_data^2)`, denoised `x - out * sigma`.
    - V_PREDICTION, V_PREDICTION_EDM, V_PREDICTION_CONTINUOUS: the same input, denoised
      `x sd^2 / (sigma^2 + sd^2) - out sigma sd / sqrt(sigma^2 + sd^2)`.
    - EDM: as V but `+ out ...`.
    - FLOW, FLUX (CONST): input `x`, denoised `x - out * sigma`.
    - IMG_TO_IMG (X0): input `x`, denoised `out`.
    - FLOW_COSMOS: with `t = sigma / (sigma + 1)`, input `x (1 - t)`, denoised
      `x (1 - t) - out t`.

    The network gets `model_sampling.timestep(sigma)` as float32 (an index for discrete models).

    **Arguments:**

    - `apply_fn`: the network, returning an array of the latent's shape:
      `apply_fn(params, model_input, timestep, *args, **kwargs)` with `params`, else
      `apply_fn(model_input, timestep, *args, **kwargs)`. E.g. a Flax module's `unet.apply`.
    - `model_sampling`: the model's `ModelSampling` (e.g. `model_sampling("V_PREDICTION")`).
    - `params`: the network's parameters, a pytree of arrays, passed to the program as
      arguments: `denoiser_from_model(unet.apply, ms, params=params)` compiles once and reuses
      the program for new parameters, with no per-call trace. Without `params`, the denoiser
      is traced at each call, so arrays bound into `apply_fn` (`functools.partial(unet.apply,
      params)`) are read then (docs/denoisers.md, the rule).

    **Returns:** a `ModelDenoiser` (a pytree; `sigma` is a scalar or of shape `(B,)`).
    """
    if not callable(apply_fn):
        raise TypeError(f"denoiser_from_model: apply_fn must be callable, got {type(apply_fn).__name__}")
    if not isinstance(model_sampling, ModelSampling):
        raise TypeError(
            "denoiser_from_model: model_sampling must be a jax_unsampler.ModelSampling "
            f"(from model_sampling(...) or preset(...).model_sampling), got {type(model_sampling).__name__}"
        )
    return ModelDenoiser(apply_fn=apply_fn, model_sampling=model_sampling, params=params)


class CFGDenoiser:
    """ComfyUI's classifier-free guidance as a denoiser: `uncond + (cond - uncond) * cfg`.

    Built by `cfg_denoiser`. Called as a denoiser it returns the guided prediction; the CFG++
    samplers (the `_cfg_pp` names) also read its unconditional prediction (`with_uncond`), as
    ComfyUI's do through its post-CFG hook. Any other denoiser stands for ComfyUI at cfg 1: its
    prediction is the unconditional one too.
    """

    def __init__(self, cond: Callable[..., Any], uncond: Callable[..., Any], cfg: Any):
        self.cond, self.uncond, self.cfg = cond, uncond, cfg

    def with_uncond(self, x: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(guided, unconditional)` predictions at `x`, `sigma` of shape `(B,)`."""
        cond, uncond = self.cond(x, sigma), self.uncond(x, sigma)
        return uncond + (cond - uncond) * self.cfg, uncond

    def __call__(self, x: jax.Array, sigma: jax.Array) -> jax.Array:
        return self.with_uncond(x, sigma)[0]


def cfg_denoiser(cond: Callable[..., Any], uncond: Callable[..., Any], cfg: float) -> CFGDenoiser:
    """A guided denoiser, as ComfyUI's CFG: `uncond(x, s) + (cond(x, s) - uncond(x, s)) * cfg`.

    **Arguments:**

    - `cond`, `uncond`: denoisers `D(x, sigma)` (`sigma` of shape `(B,)`): the conditional and
      the unconditional predictions (e.g. `denoiser_from_model` with and without the prompt).
    - `cfg`: the guidance scale (a number or a 0-d array; traced).

    **Returns:** a `CFGDenoiser`, for `sample`, `iterative_mixing_sample` and
    `inverted_latents`; the `_cfg_pp` samplers read its unconditional prediction.
    """
    for what, value in (("cond", cond), ("uncond", uncond)):
        if not callable(value):
            raise TypeError(
                f"cfg_denoiser: {what} must be a denoiser D(x, sigma), got {type(value).__name__}"
            )
    return CFGDenoiser(cond, uncond, cfg)
