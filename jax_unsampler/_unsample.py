"""The whole BatchUnsampler node in one call."""

from __future__ import annotations

from typing import Any, TypeAlias

import jax
from jax.typing import ArrayLike

from ._latent_format import LatentFormat
from ._model_sampling import ModelSampling, noise_scaling_of
from ._names import MAX_STEPS, MODES
from ._node_sigmas import node_sigmas
from ._noise import check_latent, noised_batch
from ._presets import Preset, preset
from ._validation import check_choice, check_positive_scalar

ModelArgument: TypeAlias = str | Preset | ModelSampling | tuple[ModelSampling, float | LatentFormat]
"""What `batch_unsample` takes as `model`."""


def resolve_model(fn: str, model: ModelArgument) -> tuple[ModelSampling, float, LatentFormat | None]:
    """`(model sampling, latent scale factor, latent format or None)` of a model argument.

    `model` is a preset name, a `Preset`, a `ModelSampling` (scale factor 1, no latent format)
    or a `(ModelSampling, latent_scale_factor)` / `(ModelSampling, LatentFormat)` pair.
    """
    if isinstance(model, str):
        model = preset(model)
    if isinstance(model, Preset):
        return model.model_sampling, model.latent_scale_factor, model.latent_format
    if isinstance(model, ModelSampling):
        return model, 1.0, None
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], ModelSampling):
        ms, second = model
        if isinstance(second, LatentFormat):
            return ms, second.scale_factor, second
        try:
            scale = check_positive_scalar(fn, "latent_scale_factor", second)
        except ValueError:
            raise ValueError(
                f"{fn}: model=(ModelSampling, x) needs x to be a positive latent scale factor (a number "
                f"such as 0.18215) or a LatentFormat (preset(name).latent_format), got {second!r}"
            ) from None
        if scale is None:
            raise ValueError(f"{fn}: the latent scale factor in model=(ModelSampling, x) must not be traced")
        return ms, scale, None
    raise ValueError(
        f"{fn}: model must be a preset name, a Preset, a ModelSampling or a "
        f"(ModelSampling, latent_scale_factor) pair, got {type(model).__name__}"
    )


def batch_unsample(
    key: ArrayLike,
    model: ModelArgument,
    sampler_name: str,
    scheduler: str,
    steps: int,
    start_at_step: int = 0,
    end_at_step: int = MAX_STEPS,
    *,
    latent: ArrayLike,
    normalize: bool = False,
    mode: str = "node",
    divide_by_scale_factor: bool = True,
    coupling: str = "independent",
    batch_index: ArrayLike | None = None,
) -> jax.Array:
    """The BatchUnsampler node: its sigmas, then its noised batch, with explicit PRNG keys.

    **Arguments:**

    - `key`: a PRNG key.
    - `model`: a preset name (`"sdxl"`), a `Preset`, a `ModelSampling` (scale factor 1) or a
      `(ModelSampling, latent_scale_factor)` pair.
    - `sampler_name`, `scheduler`, `steps`, `start_at_step`, `end_at_step`: the node's inputs;
      the default `end_at_step=MAX_STEPS` (10000, the node's largest) means the whole schedule.
    - `latent`: the `(B, C, ...)` latent (keyword-only).
    - `normalize`: the node's `normalize`.
    - `mode`: `"node"` (default): exactly the original node, `x + sigma / scale * eps`.
      `"model"`: the model's own sigmas (not divided), mixed in as ComfyUI does for the model
      type (`x + sigma*eps`, or `sigma*eps + (1 - sigma)*x` for flow models) in the latent
      format's space (`process_in`, then `process_out`): each entry is what ComfyUI would feed
      the model at that sigma, as a LATENT. Needs a latent format for non-trivial formats
      (a preset, or a `(ModelSampling, LatentFormat)` pair).
    - `divide_by_scale_factor`: in node mode the node divides the sigmas by the latent scale factor; pass
      `False` to noise with the model's own sigmas.
    - `coupling`, `batch_index`: see `noised_latents`.

    **Returns:** the `(n * B, C, ...)` batch, step-major, least noise first.
    """
    fn = "batch_unsample"
    latent = check_latent(fn, latent)
    check_choice(fn, "mode", mode, MODES)
    ms, scale, latent_format = resolve_model(fn, model)
    divide = mode == "node" and divide_by_scale_factor
    sigmas = node_sigmas(
        fn, ms, sampler_name, scheduler, steps, start_at_step, end_at_step,
        latent_scale_factor=scale if divide else 1.0,
    )  # fmt: skip
    return noised_batch(
        fn, key, latent, sigmas, normalize=normalize, coupling=coupling, batch_index=batch_index,
        **mode_noise_options(ms, latent_format, mode),
    )  # fmt: skip


def mode_noise_options(ms: ModelSampling, latent_format: LatentFormat | None, mode: str) -> dict[str, Any]:
    """`noised_latents` keywords (`noise_scaling`, `latent_format`) for a mode."""
    if mode == "node":
        return dict(noise_scaling="eps", latent_format=None)
    return dict(noise_scaling=noise_scaling_of(ms.model_type), latent_format=latent_format)
