"""KSampler's sigmas: the scheduler's list, adjusted for samplers that take a half step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model_sampling import ModelSampling
from ._names import DISCARD_PENULTIMATE_SAMPLERS, MAX_STEPS, SAMPLERS
from ._schedulers import calculate_sigmas, check_model_sampling
from ._validation import check_choice, check_steps, renamed_argument


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
    fn = "ksampler_sigmas"
    check_model_sampling(fn, ms)
    check_choice(fn, "sampler", sampler_name, SAMPLERS)
    steps = check_steps(fn, steps)
    if sampler_name in DISCARD_PENULTIMATE_SAMPLERS:
        full = calculate_sigmas(ms, scheduler, steps + 1, _max_steps=MAX_STEPS + 1)
        return jnp.concatenate([full[:-2], full[-1:]])
    return calculate_sigmas(ms, scheduler, steps)
