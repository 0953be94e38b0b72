"""Regenerate `jax_unsampler/data/demo_rgb.npy`, the picture behind the command's demo latent.

A 32 x 32 landscape (sky, sun, two hills, a lake), drawn procedurally so that it is ours to
ship and small (3 KB). `jax-unsampler unsample` without an INPUT turns it into a latent with
the pseudo-inverse of the model family's RGB preview factors.

    python tools/make_demo_picture.py
"""

from __future__ import annotations

import pathlib

import numpy as np

SIZE = 32
OUT = pathlib.Path(__file__).resolve().parent.parent / "jax_unsampler" / "data" / "demo_rgb.npy"


def demo_picture(size: int = SIZE) -> np.ndarray:
    """The landscape as `(size, size, 3)` uint8 RGB."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    sky_top, sky_low = np.array([0.20, 0.45, 0.85]), np.array([0.85, 0.80, 0.70])
    img = sky_top + (sky_low - sky_top) * (y[..., None] / 0.6).clip(0, 1)
    sun = (x - 0.72) ** 2 + (y - 0.25) ** 2
    img = np.where((sun < 0.012)[..., None], [1.0, 0.85, 0.25], img)
    far_hill = 0.58 - 0.12 * np.cos(2.2 * np.pi * (x - 0.15))
    img = np.where((y > far_hill)[..., None], [0.30, 0.55, 0.35], img)
    near_hill = 0.75 - 0.10 * np.cos(1.6 * np.pi * (x - 0.85))
    img = np.where((y > near_hill)[..., None], [0.25, 0.65, 0.20], img)
    lake = ((x - 0.30) / 0.22) ** 2 + ((y - 0.88) / 0.07) ** 2 < 1
    img = np.where(lake[..., None], [0.25, 0.50, 0.80], img)
    return np.round(img * 255).astype(np.uint8)


if __name__ == "__main__":
    np.save(OUT, demo_picture())
    print(f"wrote {OUT}")
