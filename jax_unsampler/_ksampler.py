"""KSampler's sigmas: the scheduler's list, adjusted for samplers that take a half step."""

from __future__ import annotations

import jax.numpy as jnp

from ._schedulers import calculate_sigmas, check_model_sampling
from ._validation import MAX_STEPS, check_choice, check_steps

SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc",
    "uni_pc_bh2",
)  # fmt: skip
"""ComfyUI's sampler names, in its order."""

DISCARD_PENULTIMATE_SAMPLERS = ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2")
"""Samplers for which KSampler computes `steps + 1` sigmas and drops the second-to-last."""


def ksampler_sigmas(ms, sampler: str, scheduler: str, steps: int):
    """`KSampler(model, steps, sampler, scheduler, denoise=1.0).sigmas`.

    **Arguments:**

    - `ms`: the model sampling.
    - `sampler`: one of `SAMPLERS`; for those in `DISCARD_PENULTIMATE_SAMPLERS` the schedule
      is computed for `steps + 1` and its second-to-last sigma dropped.
    - `scheduler`: one of `SCHEDULERS`.
    - `steps`: 0 to 10000.

    **Returns:** the float32 sigmas, descending, ending in 0.
    """
    fn = "ksampler_sigmas"
    check_model_sampling(fn, ms)
    check_choice(fn, "sampler", sampler, SAMPLERS)
    steps = check_steps(fn, steps)
    if sampler in DISCARD_PENULTIMATE_SAMPLERS:
        full = calculate_sigmas(ms, scheduler, steps + 1, _max_steps=MAX_STEPS + 1)
        return jnp.concatenate([full[:-2], full[-1:]])
    return calculate_sigmas(ms, scheduler, steps)
