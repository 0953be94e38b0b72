"""jax-unsampler: ComfyUI-exact "unsampled" latent batches in pure JAX.

A latent noised step by step along a diffusion model's own sigma schedule, with the sigmas of
ComfyUI's KSampler and the BatchUnsampler node, and noise keyed by explicit PRNG keys.
"""

from ._keys import SEED_MAX as SEED_MAX
from ._keys import key_from_seed as key_from_seed
from ._ksampler import DISCARD_PENULTIMATE_SAMPLERS as DISCARD_PENULTIMATE_SAMPLERS
from ._ksampler import SAMPLERS as SAMPLERS
from ._ksampler import ksampler_sigmas as ksampler_sigmas
from ._latent_file import load_latent as load_latent
from ._latent_file import save_latent as save_latent
from ._latent_format import LatentFormat as LatentFormat
from ._model_sampling import BETA_SCHEDULES as BETA_SCHEDULES
from ._model_sampling import MODEL_TYPES as MODEL_TYPES
from ._model_sampling import ModelSampling as ModelSampling
from ._model_sampling import model_sampling as model_sampling
from ._model_sampling import model_sampling_from_table as model_sampling_from_table
from ._model_sampling import noise_scaling_of as noise_scaling_of
from ._node import unsampler_sigmas as unsampler_sigmas
from ._noise import COUPLINGS as COUPLINGS
from ._noise import NOISE_SCALINGS as NOISE_SCALINGS
from ._noise import noised_latents as noised_latents
from ._noise import noised_latents_chunks as noised_latents_chunks
from ._noise import noised_latents_from_noise as noised_latents_from_noise
from ._presets import Preset as Preset
from ._presets import preset as preset
from ._presets import presets as presets
from ._schedulers import SCHEDULERS as SCHEDULERS
from ._schedulers import calculate_sigmas as calculate_sigmas
from ._unsample import MODES as MODES
from ._unsample import batch_unsample as batch_unsample
from ._validation import MAX_STEPS as MAX_STEPS

__version__ = "0.1.0"
