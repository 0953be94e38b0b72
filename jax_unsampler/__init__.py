"""jax-unsampler: ComfyUI-exact "unsampled" latent batches in pure JAX.

A latent noised step by step along a diffusion model's own sigma schedule, with the sigmas of
ComfyUI's KSampler and the BatchUnsampler node, and noise keyed by explicit PRNG keys.

Importing the package is cheap: every public name is loaded from its module on first use
(PEP 562), so the name tables (`SAMPLERS`, `SCHEDULERS`, ...) come without JAX, and JAX loads
with the first function. `.latent` files live in `jax_unsampler.latent_file`, the command in
`jax_unsampler.app`; neither is imported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

# Public name -> the module that defines it. The TYPE_CHECKING imports below say the same for
# type checkers and editors (tests/test_package.py keeps the two equal).
_EXPORTS = {
    **dict.fromkeys(
        (
            "BETA_SCHEDULES",
            "BLENDING_FUNCTIONS",
            "BLENDING_SCHEDULES",
            "COUPLINGS",
            "DISCARD_PENULTIMATE_SAMPLERS",
            "INVERSION_SAMPLERS",
            "INVERSION_SOLVERS",
            "INVERSION_ZERO_SIGMA",
            "MAX_STEPS",
            "MIXING_SAMPLERS",
            "MODEL_TYPES",
            "MODES",
            "NOISE_SCALINGS",
            "PARAMETERISATIONS",
            "SAMPLE_SAMPLERS",
            "SAVES",
            "SAMPLERS",
            "SCHEDULERS",
            "SEED_MAX",
        ),
        "_names",
    ),  # fmt: skip
    **dict.fromkeys(("CFGDenoiser", "ModelDenoiser", "cfg_denoiser", "denoiser_from_model"), "_denoisers"),
    "key_from_seed": "_keys",
    "brownian_noise": "_brownian",
    "inverted_latents": "_inversion",
    **dict.fromkeys(("RoundTrip", "round_trip"), "_round_trip"),
    "starting_latent": "_start",
    **dict.fromkeys(("blend", "blending_schedule"), "_blending"),
    "iterative_mixing_sample": "_mixing",
    "ksampler_sigmas": "_ksampler",
    "LatentFormat": "_latent_format",
    **dict.fromkeys(
        ("ModelSampling", "model_sampling", "model_sampling_from_table", "noise_scaling_of"),
        "_model_sampling",
    ),
    "unsampler_sigmas": "_node_sigmas",
    **dict.fromkeys(("noised_latents", "noised_latents_chunks", "noised_latents_from_noise"), "_noise"),
    **dict.fromkeys(("Preset", "preset", "presets"), "_presets"),
    "sample": "_samplers",
    "calculate_sigmas": "_schedulers",
    "batch_unsample": "_unsample",
    **dict.fromkeys(("load_latent", "save_latent"), "latent_file"),
}

if TYPE_CHECKING:
    from ._blending import blend as blend
    from ._blending import blending_schedule as blending_schedule
    from ._brownian import brownian_noise as brownian_noise
    from ._denoisers import CFGDenoiser as CFGDenoiser
    from ._denoisers import ModelDenoiser as ModelDenoiser
    from ._denoisers import cfg_denoiser as cfg_denoiser
    from ._denoisers import denoiser_from_model as denoiser_from_model
    from ._inversion import inverted_latents as inverted_latents
    from ._keys import key_from_seed as key_from_seed
    from ._ksampler import ksampler_sigmas as ksampler_sigmas
    from ._latent_format import LatentFormat as LatentFormat
    from ._mixing import iterative_mixing_sample as iterative_mixing_sample
    from ._model_sampling import ModelSampling as ModelSampling
    from ._model_sampling import model_sampling as model_sampling
    from ._model_sampling import model_sampling_from_table as model_sampling_from_table
    from ._model_sampling import noise_scaling_of as noise_scaling_of
    from ._names import BETA_SCHEDULES as BETA_SCHEDULES
    from ._names import BLENDING_FUNCTIONS as BLENDING_FUNCTIONS
    from ._names import BLENDING_SCHEDULES as BLENDING_SCHEDULES
    from ._names import COUPLINGS as COUPLINGS
    from ._names import DISCARD_PENULTIMATE_SAMPLERS as DISCARD_PENULTIMATE_SAMPLERS
    from ._names import INVERSION_SAMPLERS as INVERSION_SAMPLERS
    from ._names import INVERSION_SOLVERS as INVERSION_SOLVERS
    from ._names import INVERSION_ZERO_SIGMA as INVERSION_ZERO_SIGMA
    from ._names import MAX_STEPS as MAX_STEPS
    from ._names import MIXING_SAMPLERS as MIXING_SAMPLERS
    from ._names import MODEL_TYPES as MODEL_TYPES
    from ._names import MODES as MODES
    from ._names import NOISE_SCALINGS as NOISE_SCALINGS
    from ._names import PARAMETERISATIONS as PARAMETERISATIONS
    from ._names import SAMPLE_SAMPLERS as SAMPLE_SAMPLERS
    from ._names import SAMPLERS as SAMPLERS
    from ._names import SAVES as SAVES
    from ._names import SCHEDULERS as SCHEDULERS
    from ._names import SEED_MAX as SEED_MAX
    from ._node_sigmas import unsampler_sigmas as unsampler_sigmas
    from ._noise import noised_latents as noised_latents
    from ._noise import noised_latents_chunks as noised_latents_chunks
    from ._noise import noised_latents_from_noise as noised_latents_from_noise
    from ._presets import Preset as Preset
    from ._presets import preset as preset
    from ._presets import presets as presets
    from ._round_trip import RoundTrip as RoundTrip
    from ._round_trip import round_trip as round_trip
    from ._samplers import sample as sample
    from ._schedulers import calculate_sigmas as calculate_sigmas
    from ._start import starting_latent as starting_latent
    from ._unsample import batch_unsample as batch_unsample
    from .latent_file import load_latent as load_latent
    from .latent_file import save_latent as save_latent

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
