"""Draws docs/inversion_trajectory.png: the demo latent's inverted batch next to its noised batch.

The toy model is the exact denoiser of a Gaussian fitted to the demo latent (per channel, in
SD1.5's model space): for such data the probability-flow ODE is known in closed form, so the
inverted batch is the ODE's true trajectory up to Heun's error. The noised batch is
`batch_unsample(..., mode="model")` with the same sigmas.

python tools/make_inversion_figure.py
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

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "inversion_trajectory.png"
STEPS = 10
SHOWN = (0, 2, 4, 6, 8, 9)  # batch entries drawn


def gaussian_denoiser(mu: jax.Array, s: jax.Array):
    """E[x0 | x0 + sigma*eps = x] for x0 ~ N(mu, s^2) per channel: the exact denoiser."""

    def denoise(x: jax.Array, sigma: jax.Array) -> jax.Array:
        sig2 = jnp.reshape(sigma, (-1, 1, 1, 1)) ** 2
        return mu + s**2 / (s**2 + sig2) * (x - mu)

    return denoise


def main() -> None:
    family = ju.preset("sd15")
    fmt = family.latent_format
    latent = jnp.asarray(demo_latent(family))
    model_space = fmt.process_in(latent)
    mu = model_space.mean(axis=(0, 2, 3), keepdims=True)
    s = model_space.std(axis=(0, 2, 3), keepdims=True)
    sigmas = ju.unsampler_sigmas(family.model_sampling, "euler", "karras", STEPS)  # the model's own
    inverted = ju.inverted_latents(
        gaussian_denoiser(mu, s), latent, sigmas, sampler="heun", latent_format=fmt
    )
    noised = ju.batch_unsample(
        jax.random.key(0), family, "euler", "karras", STEPS, latent=latent, mode="model"
    )
    inverted, noised, sig = np.asarray(inverted), np.asarray(noised), np.asarray(sigmas)

    fig = Figure(figsize=(12, 5.6), layout="constrained")
    grid = fig.add_gridspec(2, len(SHOWN) + 2)
    for row, (name, batch) in enumerate((("noised batch", noised), ("inverted batch", inverted))):
        for col, i in enumerate(SHOWN):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(fmt.to_rgb(batch[i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"sigma {sig[i]:.3g}", fontsize=9)
            if col == 0:
                ax.set_ylabel(name, fontsize=11)
    ax = fig.add_subplot(grid[:, -2:])
    for name, batch, style in (("noised", noised, "o-"), ("inverted (heun)", inverted, "s-")):
        ax.plot(sig, fmt.process_in(batch).reshape(len(sig), -1).std(axis=1), style, label=name, ms=4)
    m, sd, x0 = np.asarray(mu), np.asarray(s), np.asarray(model_space)
    exact = [m + (x0 - m) * np.sqrt((sd**2 + t**2) / (sd**2 + sig[0] ** 2)) for t in sig]
    ax.plot(sig, [e.std() for e in exact], "k:", label="ODE, closed form")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sigma (SD1.5, karras, 10 steps)")
    ax.set_ylabel("std of the entry in model space")
    ax.legend(fontsize=8)
    fig.suptitle(
        "The demo latent, noised (x + sigma*eps) and inverted along the probability-flow ODE of a "
        "Gaussian fitted to it"
    )
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
