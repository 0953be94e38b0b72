"""The command's embedded demo latent: a small landscape picture shipped with the package.

The picture (`data/demo_rgb.npy`, 32 x 32 RGB, made by `tools/make_demo_picture.py`) becomes a
latent of any family with RGB preview factors through their pseudo-inverse, so its preview shows
the landscape. There is no VAE at hand; this is a stand-in, not what a VAE would encode.
"""

from __future__ import annotations

import io
from importlib import resources

import numpy as np

from .._presets import Preset


def demo_picture() -> np.ndarray:
    """The demo picture, `(32, 32, 3)` RGB in [0, 1]."""
    raw = resources.files("jax_unsampler").joinpath("data/demo_rgb.npy").read_bytes()
    return np.load(io.BytesIO(raw), allow_pickle=False).astype(np.float32) / 255


def demo_latent(family: Preset) -> np.ndarray:
    """The demo picture as a batch of one latent of `family`.

    **Arguments:**

    - `family`: the model family; it needs RGB preview factors and image or video latents.

    **Returns:** `(1, C, 32, 32)` for image families, `(1, C, 1, 32, 32)` (one frame) for video.

    **Raises:** `ValueError` for families without RGB factors or with audio latents.
    """
    fmt = family.latent_format
    if fmt.rgb_factors is None or family.latent_dimensions not in (2, 3):
        raise ValueError(
            f"{family.name} has no RGB preview factors for image latents to turn the demo picture "
            "into a latent; pass an INPUT latent file"
        )
    latent = fmt.from_rgb(demo_picture()).astype(np.float32)
    if family.latent_dimensions == 3:
        latent = latent[:, None]
    return latent[None]
