"""Draws docs/mixing_path.png: the demo latent sampled back with and without iterative mixing.

SD1.5's sigmas (karras, 30 steps), the demo picture's latent noised along them, and a toy
denoiser (the exact denoiser of Gaussian data with the latent's per-channel mean and std, so
it knows nothing of the picture); left the cosine blending schedule, middle five latent
elements along the path, right the distance to the demo latent per step.

python tools/make_mixing_figure.py
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import jax_unsampler as ju
from jax_unsampler.app._demo import demo_latent

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "mixing_path.png"


def main() -> None:
    family = ju.preset("sd15")
    latent = jnp.asarray(demo_latent(family))
    sigmas = ju.calculate_sigmas(family.model_sampling, "karras", 30)
    noised = ju.noised_latents(jax.random.key(0), latent, sigmas)
    mu = latent.mean(axis=(2, 3), keepdims=True)[0]
    s = float(latent.std())
    seen: list[np.ndarray] = []

    def denoiser(x, sigma):
        seen.append(np.asarray(x))  # the path: the latent each step starts from
        sig = sigma.reshape(-1, 1, 1, 1)
        return mu + s**2 / (s**2 + sig**2) * (x - mu)

    paths = {}
    with jax.disable_jit():  # the scan runs step by step, so the denoiser sees each latent
        seen.clear()
        out = ju.sample(denoiser, noised[:1], sigmas, sampler="euler")
        paths["without mixing (ju.sample)"] = np.stack([*seen, np.asarray(out)])
        seen.clear()
        out = ju.iterative_mixing_sample(denoiser, latent, sigmas, noised)
        paths["with mixing (cosine, alpha_1 = 2.4)"] = np.stack([*seen, np.asarray(out)])
    c1 = np.asarray(ju.blending_schedule("cosine", 30, alpha_1=2.4))

    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax0, ax1, ax2 = fig.subplots(1, 3)
    ax0.plot(c1, marker=".")
    ax0.set_title("blending schedule c1 (cosine, alpha_1 = 2.4)")
    ax0.set_xlabel("step")
    ax0.set_ylabel("weight of the sampler's latent")
    target = np.asarray(latent).reshape(-1)
    for (name, path), style in zip(paths.items(), ("--", "-"), strict=True):
        flat = path.reshape(path.shape[0], -1)
        ax1.plot(flat[:, [5, 300, 700, 2100, 3000]], style, lw=1)
        dist = np.sqrt(np.mean((flat - target) ** 2, axis=1))
        ax2.plot(dist, style, marker=".", label=name)
    ax1.set_title("5 latent elements (dashed: without mixing)")
    ax1.set_xlabel("step")
    ax2.set_yscale("log")
    ax2.set_title("RMS distance to the demo latent")
    ax2.set_xlabel("step")
    ax2.legend()
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
