"""The whole BatchUnsampler node in one call."""

from __future__ import annotations

from ._model_sampling import ModelSampling
from ._node import unsampler_sigmas
from ._noise import noised_latents
from ._presets import Preset, preset
from ._validation import MAX_STEPS


def resolve_model(fn: str, model, latent_scale_factor=None) -> tuple[ModelSampling, float]:
    """`(model sampling, latent scale factor)` from a preset name, a `Preset` or a `ModelSampling`."""
    if isinstance(model, str):
        model = preset(model)
    if isinstance(model, Preset):
        scale = model.latent_scale_factor if latent_scale_factor is None else latent_scale_factor
        return model.model_sampling, scale
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], ModelSampling):
        return model
    if isinstance(model, ModelSampling):
        return model, 1.0 if latent_scale_factor is None else latent_scale_factor
    raise ValueError(
        f"{fn}: model must be a preset name, a Preset, a ModelSampling or a "
        f"(ModelSampling, latent_scale_factor) pair, got {type(model).__name__}"
    )


def batch_unsample(
    key,
    model,
    sampler_name: str,
    scheduler: str,
    steps: int,
    start_at_step: int = 0,
    end_at_step: int = MAX_STEPS,
    latent=None,
    normalize: bool = False,
    *,
    divide_by_scale_factor: bool = True,
    coupling: str = "independent",
    batch_index=None,
):
    """The BatchUnsampler node: its sigmas, then its noised batch, with explicit PRNG keys.

    **Arguments:**

    - `key`: a PRNG key.
    - `model`: a preset name (`"sdxl"`), a `Preset`, a `ModelSampling` (scale factor 1) or a
      `(ModelSampling, latent_scale_factor)` pair.
    - `sampler_name`, `scheduler`, `steps`, `start_at_step`, `end_at_step`: the node's inputs.
    - `latent`: the `(B, C, ...)` latent.
    - `normalize`: the node's `normalize`.
    - `divide_by_scale_factor`: the node divides the sigmas by the latent scale factor; pass
      `False` to noise with the model's own sigmas.
    - `coupling`, `batch_index`: see `noised_latents`.

    **Returns:** the `(n * B, C, ...)` batch, step-major, least noise first.
    """
    fn = "batch_unsample"
    ms, scale = resolve_model(fn, model)
    if latent is None:
        raise ValueError(f"{fn}: latent is required")
    sigmas = unsampler_sigmas(
        ms, sampler_name, scheduler, steps, start_at_step, end_at_step,
        latent_scale_factor=scale if divide_by_scale_factor else 1.0,
    )  # fmt: skip
    return noised_latents(
        key, latent, sigmas, normalize=normalize, coupling=coupling, batch_index=batch_index
    )
