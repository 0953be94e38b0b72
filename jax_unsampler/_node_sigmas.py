"""The BatchUnsampler node: slice KSampler's sigmas, divide by the latent scale, flip."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._ksampler import ksampler_padded
from ._model_sampling import ModelSampling
from ._names import MAX_STEPS
from ._schedulers import on_host
from ._validation import check_int, check_positive_scalar, check_steps, renamed_argument


def node_slice(steps: int, start_at_step: int, end_at_step: int) -> tuple[int, int]:
    """The node's `[start, end)` window into the full sigma list (plain Python ints)."""
    end = min(steps, end_at_step)
    return min(start_at_step, end), end


@jax.jit
def _divide(padded, scale):
    return padded / scale


@renamed_argument("sampler", "sampler_name", since="0.2.0")
def unsampler_sigmas(
    ms: ModelSampling,
    sampler_name: str,
    scheduler: str,
    steps: int,
    start_at_step: int = 0,
    end_at_step: int = MAX_STEPS,
    latent_scale_factor=1.0,
):
    """The sigmas BatchUnsampler noises with, least noise first.

    `KSampler` sigmas, then `full[start:end] / latent_scale_factor` with
    `end = min(steps, end_at_step)` and `start = min(start_at_step, end)`, then reversed.

    The node divides by the model's latent scale factor (0.18215 for SD1.5, turning a top sigma
    of 14.6 into 80.2). That is a quirk of the original kept for parity: pass the preset's
    `latent_scale_factor` to reproduce it, or leave the default `1.0` for the model's own
    sigmas.

    **Arguments:**

    - `ms`, `sampler_name`, `scheduler`, `steps`: as for `ksampler_sigmas`.
    - `start_at_step`, `end_at_step`: 0 to `MAX_STEPS` (10000, the node's largest), the node's
      window; the default `end_at_step=MAX_STEPS` means the whole schedule.
    - `latent_scale_factor`: the divisor, a positive finite number (Python, NumPy or JAX
      scalar; traced: changing it does not recompile, and under `jit` it is not checked).

    **Returns:** a float32 array of length `end - start` (empty when `start >= end`).
    """
    return node_sigmas(
        "unsampler_sigmas",
        ms,
        sampler_name,
        scheduler,
        steps,
        start_at_step,
        end_at_step,
        latent_scale_factor,
    )


def node_sigmas(
    fn: str,
    ms: ModelSampling,
    sampler_name: str,
    scheduler: str,
    steps: int,
    start_at_step: int = 0,
    end_at_step: int = MAX_STEPS,
    latent_scale_factor=1.0,
) -> jax.Array:
    """`unsampler_sigmas` for the public function `fn` (its errors name it)."""
    steps = check_steps(fn, steps)
    start_at_step = check_int(fn, "start_at_step", start_at_step, 0, MAX_STEPS)
    end_at_step = check_int(fn, "end_at_step", end_at_step, 0, MAX_STEPS)
    check_positive_scalar(fn, "latent_scale_factor", latent_scale_factor)
    padded, take = ksampler_padded(fn, ms, sampler_name, scheduler, steps)
    start, end = node_slice(steps, start_at_step, end_at_step)
    # Divided at the padded length (one program per length bucket), then cut and flipped.
    scaled = _divide(padded, jnp.asarray(latent_scale_factor, jnp.float32))
    return on_host(scaled, lambda v: take(v)[start:end][::-1])
