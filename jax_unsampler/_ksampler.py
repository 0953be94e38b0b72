"""KSampler's sigmas: the scheduler's list, adjusted for samplers that take a half step."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ._model_sampling import ModelSampling
from ._names import DISCARD_PENULTIMATE_SAMPLERS, SAMPLERS, SCHEDULERS
from ._schedulers import check_model_sampling, on_host, padded_sigmas
from ._validation import check_choice, check_steps, renamed_argument


def ksampler_padded(fn: str, ms: ModelSampling, sampler_name: str, scheduler: str, steps: int):
    """Check the arguments; `(padded, take)`: the scheduler's padded sigmas (see `padded_sigmas`)
    and the function that makes KSampler's list of them (slicing only, NumPy or jnp)."""
    check_model_sampling(fn, ms)
    check_choice(fn, "sampler", sampler_name, SAMPLERS)
    check_choice(fn, "scheduler", scheduler, SCHEDULERS)
    steps = check_steps(fn, steps)
    discard = sampler_name in DISCARD_PENULTIMATE_SAMPLERS
    padded, length = padded_sigmas(ms, scheduler, steps + 1 if discard else steps)

    def take(v: Any) -> Any:
        if not discard:
            return v[:length]
        # Computed for steps + 1; the second-to-last sigma is dropped.
        return v[np.r_[0 : length - 2, length - 1]]

    return padded, take


@renamed_argument("sampler", "sampler_name", since="0.2.0")
def ksampler_sigmas(ms: ModelSampling, sampler_name: str, scheduler: str, steps: int) -> jax.Array:
    """`KSampler(model, steps, sampler, scheduler, denoise=1.0).sigmas`.

    **Arguments:**

    - `ms`: the model sampling.
    - `sampler_name`: one of `SAMPLERS`; for those in `DISCARD_PENULTIMATE_SAMPLERS` the schedule
      is computed for `steps + 1` and its second-to-last sigma dropped.
    - `scheduler`: one of `SCHEDULERS`.
    - `steps`: 0 to 10000.

    **Returns:** the float32 sigmas, descending, ending in 0.
    """
    padded, take = ksampler_padded("ksampler_sigmas", ms, sampler_name, scheduler, steps)
    return on_host(padded, take)
