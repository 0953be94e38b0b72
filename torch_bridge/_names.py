"""Choice lists the node needs before JAX is imported.

`jax_unsampler` holds the same names, but importing it imports JAX; the node's `INPUT_TYPES`
must work even where JAX is broken, so the names live here too (a test keeps the copies equal).
"""

from __future__ import annotations

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
"""ComfyUI's sampler names, in its order (equal to `jax_unsampler.SAMPLERS`)."""

SCHEDULERS = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)  # fmt: skip
"""ComfyUI's scheduler names, in its order (equal to `jax_unsampler.SCHEDULERS`)."""

DISCARD_PENULTIMATE_SAMPLERS = ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2")
"""Samplers whose KSampler sigmas come from `steps + 1` with the second-to-last dropped."""

COUPLINGS = ("independent", "shared", "markov")
"""`jax_unsampler.COUPLINGS`."""

MODES = ("node", "model")
"""`jax_unsampler.MODES`."""

NOISE_SOURCES = ("jax", "torch")
"""Where the node's noise comes from: JAX keys, or torch's CPU generator as the original."""

MAX_STEPS = 10000
"""The largest step count or step bound the node accepts."""

MAX_SEED = 2**64 - 1
"""The largest seed (ComfyUI's usual seed range)."""
