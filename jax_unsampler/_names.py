"""The name tables and limits: plain Python, no JAX, so anything may import them cheaply.

`torch_bridge`'s node builds its input lists from these before JAX is ever imported.
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
"""ComfyUI's sampler names, in its order."""

DISCARD_PENULTIMATE_SAMPLERS = ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2")
"""Samplers for which KSampler computes `steps + 1` sigmas and drops the second-to-last."""

SCHEDULERS = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)  # fmt: skip
"""ComfyUI's scheduler names, in its order."""

MODEL_TYPES = (
    "EPS", "V_PREDICTION", "V_PREDICTION_EDM", "STABLE_CASCADE", "EDM", "FLOW",
    "V_PREDICTION_CONTINUOUS", "FLUX", "IMG_TO_IMG", "FLOW_COSMOS",
)  # fmt: skip
"""ComfyUI's `ModelType` names, in its order."""

PARAMETERISATIONS = (
    "discrete", "continuous_edm", "continuous_v", "cosmos_rflow", "discrete_flow", "flux",
    "stable_cascade",
)  # fmt: skip
"""The families of sigma <-> timestep maps (ComfyUI's model sampling classes)."""

BETA_SCHEDULES = ("linear", "sqrt_linear", "sqrt", "cosine", "squaredcos_cap_v2")
"""The `beta_schedule` values of discrete (EPS / V_PREDICTION) models."""

COUPLINGS = ("independent", "shared", "markov")
"""How the noise of consecutive steps relates (see `noised_latents`)."""

NOISE_SCALINGS = ("eps", "const")
"""ComfyUI's `noise_scaling` rules: `x + sigma*eps` (EPS, V, EDM, Cosmos) or
`sigma*eps + (1 - sigma)*x` (CONST: rectified-flow models such as SD3, Flux, Wan)."""

MODES = ("node", "model")
"""`"node"`: the original node's `x + sigma / scale_factor * eps`. `"model"`: what ComfyUI feeds
the model at each of its own sigmas (its noise scaling, in the latent format's space)."""

SAMPLE_SAMPLERS = SAMPLERS
"""The samplers of `sample`: every name of ComfyUI's (`_steps.SAMPLER_STEPS`)."""

MIXING_SAMPLERS = tuple(name for name in SAMPLERS if name not in ("dpm_fast", "dpm_adaptive"))
"""The samplers of `iterative_mixing_sample`: every one that steps along the given sigmas (all
but ComfyUI's DPM-Solver wrappers, which choose their own steps)."""

INVERSION_SAMPLERS = (
    "euler", "euler_cfg_pp", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip
"""The samplers `inverted_latents` runs up the probability-flow ODE: the deterministic ones that
step along the given sigmas (but heunpp2, whose weights read a descending schedule's first
sigma), in ComfyUI's order."""

SAVES = ("final", "trajectory")
"""What `sample` keeps (its `save=`): the last latent, or every step's (the trajectory)."""

INVERSION_SOLVERS = INVERSION_SAMPLERS
"""The former name of `INVERSION_SAMPLERS` (inversion's `solver=` is now `sampler=`)."""

BLENDING_SCHEDULES = ("cosine", "linear", "logistic")
"""The rising blending schedules `c1` of `blending_schedule`."""

BLENDING_FUNCTIONS = ("addition", "slerp", "norm_only")
"""How `blend` mixes the noised latent with the sampler's."""

INVERSION_ZERO_SIGMA = 1e-4
"""Where a step that starts at sigma 0 evaluates the denoiser (see `inverted_latents`)."""

MAX_STEPS = 10000
"""10000: the largest step count or step bound the ComfyUI node accepts; the default
`end_at_step` of `unsampler_sigmas` and `batch_unsample` (the whole schedule)."""

SEED_MAX = 2**64 - 1
"""The largest seed `key_from_seed` (and ComfyUI's seed inputs) accept."""

ITEM_ID_MAX = 2**32 - 1
"""The largest item id (`batch_index` entry) and step id: both are folded into the key as uint32."""
