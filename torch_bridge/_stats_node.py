"""The ComfyUI node "Latent Batch Statistics": the command's `--stats` plot as an IMAGE.

A Batch Unsampler's batch (or any batch made the same way) goes in, with the settings that made
it; out comes the picture the command `jax-unsampler unsample --stats` draws
(`jax_unsampler.app._plots.StatsCollector`): per step, the mean and the standard deviation of
the step's latents beside the ones the unsampling formula expects, and the Kolmogorov-Smirnov
distance of the standardised entries from N(0, 1).

Importing this module imports neither JAX nor matplotlib: both load when the node first runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from jax_unsampler._names import MODES, SAMPLERS, SCHEDULERS
from jax_unsampler._validation import check_choice

from ._cache import enable_node_compilation_cache
from ._node import BatchUnsamplerJax, _comfy_names, node_sigmas, read_model
from ._node_inputs import check_latent_image, check_window, node_message

STATS_NODE_ID = "JaxUnsampler_LatentBatchStatistics"
STATS_DISPLAY_NAME = "Latent Batch Statistics (jax-unsampler)"


def require_matplotlib(fn: str) -> None:
    """Refuse, before any work, a node that draws a plot where matplotlib is missing: one line
    naming the node and the fix (the pack's requirements.txt lists it)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError(
            f"{fn}: drawing its plot needs matplotlib, which is not installed in ComfyUI's Python; "
            "run `pip install -r custom_nodes/jax-unsampler/requirements.txt` there and restart ComfyUI"
        )


def _image_of(figure) -> torch.Tensor:
    """A matplotlib figure drawn with Agg as a ComfyUI IMAGE: `(1, H, W, 3)` float32 in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / np.float32(255)
    return torch.from_numpy(np.ascontiguousarray(rgb))[None]


def latent_batch_statistics(
    latent_batch: dict[str, Any],
    latent_image: dict[str, Any],
    model,
    sampler_name: str,
    scheduler: str,
    steps: int,
    start_at_step: int,
    end_at_step: int,
    normalize: bool = False,
    mode: str = "node",
):
    """The statistics of a noised batch, as the command collects them (a `StatsCollector`).

    **Arguments:**

    - `latent_batch`: the LATENT batch to look at: `n * B` latents, step-major, least noise
      first (what Batch Unsampler returns).
    - `latent_image`: the `B` latents it was made from (Batch Unsampler's `latent_image`).
    - `model`, `sampler_name`, `scheduler`, `steps`, `start_at_step`, `end_at_step`,
      `normalize`, `mode`: the Batch Unsampler's settings that made it (they give the `n`
      sigmas and the formula's expectations).

    **Raises:** `ValueError` naming the node and the input, for every bad input, and when the
    batch does not hold `n * B` latents of `latent_image`'s shape.
    """
    fn = STATS_NODE_ID
    batch = check_latent_image(fn, latent_batch, name="latent_batch")
    latent = check_latent_image(fn, latent_image)
    check_choice(fn, "sampler_name", sampler_name, [*SAMPLERS, *_comfy_names("SAMPLERS")])
    check_choice(fn, "scheduler", scheduler, [*SCHEDULERS, *_comfy_names("SCHEDULERS")])
    steps, start_at_step, end_at_step = check_window(fn, steps, start_at_step, end_at_step)
    check_choice(fn, "mode", mode, MODES)
    if not isinstance(normalize, bool):
        raise ValueError(f"{fn}: normalize must be True or False, got {normalize!r}")
    ms, divisor, latent_format = read_model(fn, model, mode)
    require_matplotlib(fn)
    enable_node_compilation_cache()
    from jax_unsampler._unsample import mode_noise_options
    from jax_unsampler.app._plots import StatsCollector

    try:
        sigmas = node_sigmas(
            fn, model, ms, sampler_name, scheduler, steps, start_at_step, end_at_step, divisor
        )
    except ValueError as e:
        raise ValueError(node_message(fn, e)) from None
    sigmas = np.asarray(sigmas, np.float32)
    want = (len(sigmas) * latent.shape[0], *latent.shape[1:])
    if tuple(batch.shape) != want:
        raise ValueError(
            f"{fn}: latent_batch has shape {tuple(batch.shape)}, but {len(sigmas)} steps of latent_image's "
            f"{latent.shape[0]} latents of shape {tuple(latent.shape[1:])} make {want}; connect the batch "
            "Batch Unsampler made from latent_image, with the same settings here"
        )
    options = mode_noise_options(ms, latent_format, mode)
    collector = StatsCollector(latent.detach().cpu().float().numpy(), sigmas, normalize, options)
    collector.add(0, batch.detach().cpu().float().numpy())
    return collector


def latent_batch_statistics_image(**inputs) -> torch.Tensor:
    """The node's IMAGE: the command's `--stats` figure of `latent_batch_statistics(**inputs)`."""
    collector = latent_batch_statistics(**inputs)
    n, b = len(collector.sigmas), collector.batch
    title = (
        f"{n} steps x {b} latent{'s' if b != 1 else ''}: {inputs['sampler_name']}, {inputs['scheduler']}, "
        f"mode {inputs.get('mode', 'node')}"
    )
    return _image_of(collector.figure(title))


class LatentBatchStatisticsJax:
    """ComfyUI node: the `--stats` plot of a noised batch, as an IMAGE."""

    @classmethod
    def INPUT_TYPES(cls):
        base = BatchUnsamplerJax.INPUT_TYPES()
        required = {
            "latent_batch": ("LATENT", {"tooltip": "The batch to look at (Batch Unsampler's output)."}),
            **base["required"],
        }
        required["latent_image"] = ("LATENT", {"tooltip": "The latents the batch was made from."})
        required["steps"] = (required["steps"][0], {**required["steps"][1], "default": 20})
        return {"required": required, "optional": {"mode": base["optional"]["mode"]}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("plot_image",)
    FUNCTION = "plot"
    CATEGORY = BatchUnsamplerJax.CATEGORY
    DESCRIPTION = (
        "Per-step mean, standard deviation (against the formula's) and normality of a noised "
        "latent batch, as the jax-unsampler command's --stats plot. Give it the Batch "
        "Unsampler's settings that made the batch."
    )

    def plot(self, **inputs):
        return (latent_batch_statistics_image(**inputs),)
