"""A model family's latent format: the shift/scale into model space and the RGB preview map."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class LatentFormat:
    """ComfyUI's latent format numbers for one family.

    `process_in(x)` maps a LATENT into the model's space: `(x - shift) * scale`, or with
    per-channel statistics `(x - mean) * scale / std`; `process_out` is its inverse. The RGB
    factors are ComfyUI's quick-preview approximation of the VAE decoder.
    """

    name: str
    scale_factor: float
    shift_factor: float = 0.0
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    rgb_factors: tuple[tuple[float, float, float], ...] | None = None
    rgb_bias: tuple[float, float, float] | None = None

    def _stats(self, ndim: int):
        shape = (1, -1) + (1,) * (ndim - 2)
        mean = jnp.asarray(self.latents_mean, jnp.float32).reshape(shape)
        std = jnp.asarray(self.latents_std, jnp.float32).reshape(shape)
        return mean, std

    def process_in(self, x):
        """LATENT space to model space."""
        if self.latents_mean is not None:
            mean, std = self._stats(x.ndim)
            return (x - mean) * self.scale_factor / std
        return (x - self.shift_factor) * self.scale_factor

    def process_out(self, x):
        """Model space back to LATENT space."""
        if self.latents_mean is not None:
            mean, std = self._stats(x.ndim)
            return x * std / self.scale_factor + mean
        return x / self.scale_factor + self.shift_factor

    def to_rgb(self, latent: np.ndarray) -> np.ndarray:
        """Approximate colours in [0, 1] of a `(C, *spatial)` latent, channels last.

        Uses the family's RGB factors, or the first three channels when it has none.
        """
        x = np.asarray(latent, np.float32)
        if self.rgb_factors is not None and len(self.rgb_factors) == x.shape[0]:
            rgb = np.tensordot(x, np.asarray(self.rgb_factors, np.float32), axes=([0], [0]))
            if self.rgb_bias is not None:
                rgb = rgb + np.asarray(self.rgb_bias, np.float32)
            return np.clip((rgb + 1) / 2, 0, 1)
        rgb = np.moveaxis(x[:3], 0, -1)
        if rgb.shape[-1] < 3:
            rgb = np.concatenate([rgb] + [rgb[..., :1]] * (3 - rgb.shape[-1]), axis=-1)
        return np.clip((rgb / 4 + 1) / 2, 0, 1)

    def from_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """A `(C, *spatial)` latent whose `to_rgb` is close to `rgb` (pseudo-inverse of the factors)."""
        if self.rgb_factors is None:
            raise ValueError(f"LatentFormat.from_rgb: {self.name} has no RGB preview factors")
        target = np.asarray(rgb, np.float32) * 2 - 1
        if self.rgb_bias is not None:
            target = target - np.asarray(self.rgb_bias, np.float32)
        pinv = np.linalg.pinv(np.asarray(self.rgb_factors, np.float32))  # (3, C)
        return np.moveaxis(np.tensordot(target, pinv, axes=([-1], [0])), -1, 0)


def _tuple(v):
    if v is None:
        return None
    return tuple(_tuple(e) if isinstance(e, list) else float(e) for e in v)


def latent_format_from_record(name: str, record: dict) -> LatentFormat:
    """A `LatentFormat` from a golden-style record (`scale_factor`, `latent_rgb_factors`, ...)."""
    return LatentFormat(
        name=name,
        scale_factor=float(record["scale_factor"]),
        shift_factor=float(record.get("shift_factor") or 0.0),
        latents_mean=_tuple(record.get("latents_mean")),
        latents_std=_tuple(record.get("latents_std")),
        rgb_factors=_tuple(record.get("latent_rgb_factors")),
        rgb_bias=_tuple(record.get("latent_rgb_factors_bias")),
    )
