"""Draws docs/coupling_paths.png: a few latent elements followed through the steps, per coupling.

python tools/make_coupling_figure.py
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import jax_unsampler as ju

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "coupling_paths.png"


def main() -> None:
    ms = ju.preset("sd15").model_sampling
    sigmas = ju.unsampler_sigmas(ms, "euler", "karras", 30)  # the model's own sigmas, ascending
    latent = jnp.zeros((1, 4, 8, 8))
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    for ax, coupling in zip(axes, ju.COUPLINGS, strict=True):
        z = np.asarray(ju.noised_latents(jax.random.key(3), latent, sigmas, coupling=coupling))
        paths = z.reshape(len(sigmas), -1)[:, :5]
        ax.plot(np.asarray(sigmas), paths, marker=".", lw=1)
        ax.plot(np.asarray(sigmas), 2 * np.asarray(sigmas), "k--", lw=0.8, label="±2 sigma")
        ax.plot(np.asarray(sigmas), -2 * np.asarray(sigmas), "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f'coupling="{coupling}"')
        ax.set_xlabel("sigma (SD1.5, karras, 30 steps)")
    axes[0].set_ylabel("value of 5 latent elements (x = 0)")
    axes[0].legend(loc="upper left")
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
