"""The `--stats` plot: per-step mean, standard deviation and normality against sigma.

Each step's entries (all items of the batch at that step) are summarised as the batch streams
past: their mean, their standard deviation next to the one expected from the formula, and the
Kolmogorov-Smirnov distance of the standardised entries from N(0, 1), which falls towards 0 as
the picture dissolves into noise. Needs matplotlib (the `viz` extra).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure  # a bare Figure draws with Agg, without touching pyplot's state
from scipy import stats

from .._noise import noised_latents_from_noise

KS_SAMPLE = 8192
"""Entries per step the normality measure looks at (evenly strided), to keep long runs quick."""


class StatsCollector:
    """Per-step statistics of a streamed batch, and what the formula expects of them.

    **Arguments:**

    - `latent`: the `(B, C, *spatial)` input latent.
    - `sigmas`: the `n` sigmas of the run.
    - `normalize`: whether the run subtracts the first entry's mean.
    - `noise_options`: the `noise_scaling` and `latent_format` keywords of the run.
    """

    def __init__(self, latent: np.ndarray, sigmas: np.ndarray, normalize: bool, noise_options: dict):
        self.latent = latent
        self.batch = latent.shape[0]
        self.sigmas = np.asarray(sigmas, np.float32)
        self.normalize = normalize
        self.noise_options = noise_options
        n = len(self.sigmas)
        self.mean, self.std, self.ks = np.zeros(n), np.zeros(n), np.zeros(n)
        self.expected_mean, self.expected_std, self.mean_spread = np.zeros(n), np.zeros(n), np.zeros(n)

    def add(self, first_step: int, chunk: np.ndarray) -> None:
        """Summarise a chunk of the batch that starts at step `first_step`."""
        steps = chunk.reshape(chunk.shape[0] // self.batch, -1)
        span = slice(first_step, first_step + steps.shape[0])
        self.mean[span] = steps.mean(axis=1, dtype=np.float64)
        self.std[span] = steps.std(axis=1, dtype=np.float64)
        self.ks[span] = [_ks_distance(row) for row in steps]
        expected = self._expected(self.sigmas[span])
        self.expected_mean[span], self.expected_std[span], self.mean_spread[span] = expected

    def _expected(self, sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each step's mean and std on average, and the std of its mean.

        Every entry is `a * eps + c`, linear in its noise `eps`: the batch with `eps = 0` gives
        `c`, with `eps = 1` gives `a + c`.
        """
        shape = (len(sigmas) * self.batch, *self.latent.shape[1:])
        zero = np.zeros(shape, np.float32)
        base = np.asarray(noised_latents_from_noise(self.latent, sigmas, zero, **self.noise_options))
        unit = np.asarray(noised_latents_from_noise(self.latent, sigmas, zero + 1, **self.noise_options))
        base, slope = base.reshape(len(sigmas), -1), (unit - base).reshape(len(sigmas), -1)
        mean = base.mean(axis=1, dtype=np.float64)
        if self.normalize:
            mean = mean - self._first_mean()
        noise_var = np.mean(np.square(slope, dtype=np.float64), axis=1)
        std = np.sqrt(noise_var + base.var(axis=1, dtype=np.float64))
        return mean, std, np.sqrt(noise_var / base.shape[1])

    def _first_mean(self) -> float:
        """What `normalize` subtracts, on average: the noiseless mean of the first entry."""
        zero = np.zeros((1, *self.latent.shape[1:]), np.float32)
        first = noised_latents_from_noise(self.latent[:1], self.sigmas[:1], zero, **self.noise_options)
        return float(np.mean(first, dtype=np.float64))

    def figure(self, title: str):
        """The three panels against sigma, as a matplotlib `Figure`."""
        fig = Figure(figsize=(7, 7.5), layout="constrained")
        ax_mean, ax_std, ax_ks = fig.subplots(3, 1, sharex=True)
        style = dict(marker="o", markersize=3) if len(self.sigmas) <= 60 else dict(linewidth=0.6)
        ax_mean.plot(self.sigmas, self.mean, label="mean", **style)
        ax_mean.plot(self.sigmas, self.expected_mean, "--", color="grey", label="expected")
        spread = 2 * self.mean_spread
        ax_mean.fill_between(self.sigmas, self.expected_mean - spread, self.expected_mean + spread,
                             color="grey", alpha=0.2, label="expected ± 2 std of the mean")  # fmt: skip
        ax_std.plot(self.sigmas, self.std, label="standard deviation", **style)
        ax_std.plot(self.sigmas, self.expected_std, "--", color="grey", label="expected")
        ax_ks.plot(self.sigmas, self.ks, label="KS distance from N(0, 1)", **style)
        ax_ks.axhline(_ks_critical(self.latent[0].size * self.batch), color="grey", linestyle=":",
                      label="1% test threshold")  # fmt: skip
        ax_ks.set_ylim(bottom=0)
        for ax, name in ((ax_mean, "mean"), (ax_std, "std"), (ax_ks, "KS distance")):
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        if _wide(self.sigmas):
            ax_ks.set_xscale("log")
        if _wide(self.std):
            ax_std.set_yscale("log")
        ax_ks.set_xlabel("sigma")
        fig.suptitle(title)
        return fig

    def save(self, path: str, title: str) -> None:
        """Write the figure to `path` as PNG."""
        self.figure(title).savefig(path, format="png", dpi=100)


def _wide(values: np.ndarray) -> bool:
    """Whether positive values span enough to want a log axis."""
    return len(values) > 0 and values.min() > 0 and values.max() > 20 * values.min()


def _ks_distance(values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance of the standardised values (a strided sample) from N(0, 1)."""
    sample = values[:: max(1, len(values) // KS_SAMPLE)].astype(np.float64)
    std = sample.std()
    if not std > 0:
        return 1.0
    return float(stats.kstest((sample - sample.mean()) / std, "norm").statistic)


def _ks_critical(entries: int) -> float:
    """The KS distance a sample of N(0, 1) exceeds with probability 1% (asymptotic)."""
    n = len(range(0, entries, max(1, entries // KS_SAMPLE)))
    return 1.628 / np.sqrt(n)
