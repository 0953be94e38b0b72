"""The toy denoisers of tools/record_iterative_mixer.py, written again in JAX, and the recorded data."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
from conftest import DATA


def gaussian_denoiser(mu, s: float = 0.8):
    """E[x0 | x] for x0 ~ N(mu, s^2 I) and x = x0 + sigma * eps."""
    mu = jnp.asarray(mu)

    def denoise(x, sigma):
        sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        return mu + s**2 / (s**2 + sig**2) * (x - mu)

    return denoise


def nonlinear_denoiser(mu):
    mu = jnp.asarray(mu)

    def denoise(x, sigma):
        sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        c = 1 / (1 + sig**2)
        return jnp.tanh(c * x + (1 - c) * mu) + 0.1 * x * c

    return denoise


def toy(name: str, mu):
    return gaussian_denoiser(mu) if name == "gaussian" else nonlinear_denoiser(mu)


def recorded(kind: str) -> list[tuple[dict, dict[str, np.ndarray]]]:
    """`(record, arrays)` of every recorded case of a kind in iterative_mixer.npz."""
    with np.load(DATA / "iterative_mixer.npz") as data:
        records = json.loads(str(data["index"]))
        out = []
        for r in records:
            if r["kind"] != kind:
                continue
            prefix = f"{kind}{r['i']}_"
            out.append((r, {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}))
    return out
