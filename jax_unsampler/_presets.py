"""Named model families: model sampling, latent scale factor, channels and spatial rank."""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from typing import Any

from ._latent_format import LatentFormat, latent_format_from_record
from ._model_sampling import ModelSampling, model_sampling
from ._validation import check_choice


@dataclasses.dataclass(frozen=True)
class Preset:
    """A ComfyUI model family.

    **Attributes:**

    - `name`: the preset's name (`presets()` lists them).
    - `model_type`, `sampling_settings`: ComfyUI's model type and settings dict.
    - `latent_format`: the family's `LatentFormat` (scale, shift, statistics, RGB preview).
    - `latent_channels`: channels of its latents.
    - `latent_dimensions`: spatial rank (2 for images, 3 for video, 1 for audio).
    """

    name: str
    model_type: str
    sampling_settings: dict[str, Any]
    latent_format: LatentFormat
    latent_channels: int
    latent_dimensions: int

    @property
    def latent_scale_factor(self) -> float:
        """The factor the node divides sigmas by (the latent format's scale factor)."""
        return self.latent_format.scale_factor

    @property
    def model_sampling(self) -> ModelSampling:
        """The family's `ModelSampling` (built once, then cached)."""
        return _model_sampling_of(self.model_type, json.dumps(self.sampling_settings, sort_keys=True))

    @property
    def latent_rank(self) -> int:
        """Rank of a batch of its latents: batch, channels and the spatial axes."""
        return 2 + self.latent_dimensions


@functools.cache
def _model_sampling_of(model_type: str, settings_json: str) -> ModelSampling:
    return model_sampling(model_type, json.loads(settings_json))


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, Preset]:
    raw = json.loads(resources.files("jax_unsampler").joinpath("data/presets.json").read_text())
    formats = {k: latent_format_from_record(k, v) for k, v in raw["latent_formats"].items()}
    return {
        name: Preset(
            name=name,
            model_type=p["model_type"],
            sampling_settings=p["sampling_settings"],
            latent_format=formats[p["latent_format"]],
            latent_channels=p["latent_channels"],
            latent_dimensions=p["latent_dimensions"],
        )
        for name, p in raw["presets"].items()
    }


def presets() -> tuple[str, ...]:
    """The names of every preset, in a stable order.

    **Returns:** a tuple of names, each accepted by `preset`.
    """
    return tuple(_registry())


def preset(name: str) -> Preset:
    """The named model family, e.g. `preset("sdxl")`; `presets()` lists the names.

    **Arguments:**

    - `name`: a preset name (a `Preset` is returned as it is).

    **Returns:** the `Preset`: its `model_sampling`, `latent_scale_factor`, `latent_format`,
    `latent_channels` and `latent_dimensions`. An unknown name raises a `ValueError` listing
    the valid ones.
    """
    if isinstance(name, Preset):
        return name
    return _registry()[check_choice("preset", "preset", name, presets())]
