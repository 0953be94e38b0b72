"""torch_bridge: torch latents and ComfyUI models for jax_unsampler, and the ComfyUI node.

- `to_jax` / `to_torch`: arrays across frameworks, shared through DLPack where possible;
  `latent_to_jax` / `latent_with_samples` for ComfyUI LATENT dicts.
- `model_sampling_from_comfy`, `latent_scale_factor`, `latent_format_from_comfy`: a ComfyUI
  MODEL read as jax_unsampler objects (no ComfyUI import needed).
- `noised_latents_torch`: the original BatchUnsampler's torch-seeded noise, applied in JAX.
- `inverted_latents_torch`: `jax_unsampler.inverted_latents` around a torch denoiser.
- `iterative_mixing_sample_torch`: the original iterative mixing sampler's torch-seeded noise
  (noised batch, LCM and rewind draws), with the mixing loop run in JAX around a JAX denoiser.
- `sample_torch`: `jax_unsampler.sample`'s samplers around a torch denoiser, run in torch.
- `mixing_sample_torch`: the same mixing around a torch denoiser (a ComfyUI model), the
  package's steps run in torch.
- `NODE_CLASS_MAPPINGS` / `NODE_DISPLAY_NAME_MAPPINGS`: the ComfyUI nodes, Batch Unsampler,
  Inverted Batch Unsampler (`inverted_batch_unsample_comfy`: the batch of an ODE inversion
  with the MODEL), Latent Batch Statistics (`latent_batch_statistics`), and the mixing nodes:
  Iterative Mixing KSampler (`iterative_mixing_ksampler_comfy`), its Advanced form
  (`iterative_mixing_ksampler_advanced_comfy`) and the SAMPLER Iterative Mixing Sampler
  (`iterative_mixing_sampler_comfy`).
- `enable_node_compilation_cache`: JAX's persistent compilation cache in ComfyUI's user
  directory, turned on by the nodes when they first run (`JAX_UNSAMPLER_NODE_CACHE=0`: off).
- `torch_bridge.comfy_v3`: the same node for ComfyUI's V3 API (`comfy_entrypoint`); it imports
  `comfy_api`, so it is imported only inside ComfyUI, never by this package.

Importing this package imports torch, never JAX: JAX loads on first use.
"""

import os
from typing import Any

from . import _inversion_node, _mixing_node, _node, _stats_node
from ._cache import enable_node_compilation_cache as enable_node_compilation_cache
from ._comfy_model import comfy_model_object as comfy_model_object
from ._comfy_model import latent_format_from_comfy as latent_format_from_comfy
from ._comfy_model import latent_scale_factor as latent_scale_factor
from ._comfy_model import model_sampling_from_comfy as model_sampling_from_comfy
from ._convert import latent_samples as latent_samples
from ._convert import latent_to_jax as latent_to_jax
from ._convert import latent_with_samples as latent_with_samples
from ._convert import to_jax as to_jax
from ._convert import to_torch as to_torch
from ._install import install_comfyui_node as install_comfyui_node
from ._inversion import inverted_latents_torch as inverted_latents_torch
from ._inversion_node import INVERSION_NODE_ID as INVERSION_NODE_ID
from ._inversion_node import InvertedBatchUnsamplerJax as InvertedBatchUnsamplerJax
from ._inversion_node import inverted_batch_unsample_comfy as inverted_batch_unsample_comfy
from ._mixing import iterative_mixing_sample_torch as iterative_mixing_sample_torch
from ._mixing import mixing_sample_torch as mixing_sample_torch
from ._mixing_node import IterativeMixingKSamplerAdvancedJax as IterativeMixingKSamplerAdvancedJax
from ._mixing_node import IterativeMixingKSamplerJax as IterativeMixingKSamplerJax
from ._mixing_node import IterativeMixingSamplerJax as IterativeMixingSamplerJax
from ._mixing_node import iterative_mixing_ksampler_advanced_comfy as iterative_mixing_ksampler_advanced_comfy
from ._mixing_node import iterative_mixing_ksampler_comfy as iterative_mixing_ksampler_comfy
from ._mixing_node import iterative_mixing_sampler_comfy as iterative_mixing_sampler_comfy
from ._node import NODE_ID as NODE_ID
from ._node import BatchUnsamplerJax as BatchUnsamplerJax
from ._node import batch_unsample_comfy as batch_unsample_comfy
from ._noise import noised_latents_torch as noised_latents_torch
from ._noise import torch_noise as torch_noise
from ._sampling import sample_torch as sample_torch
from ._stats_node import STATS_NODE_ID as STATS_NODE_ID
from ._stats_node import LatentBatchStatisticsJax as LatentBatchStatisticsJax
from ._stats_node import latent_batch_statistics as latent_batch_statistics

__all__ = [
    "INVERSION_NODE_ID",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "NODE_ID",
    "BatchUnsamplerJax",
    "InvertedBatchUnsamplerJax",
    "batch_unsample_comfy",
    "comfy_model_object",
    "enable_node_compilation_cache",
    "install_comfyui_node",
    "inverted_batch_unsample_comfy",
    "inverted_latents_torch",
    "iterative_mixing_sample_torch",
    "latent_format_from_comfy",
    "latent_samples",
    "latent_scale_factor",
    "latent_to_jax",
    "latent_with_samples",
    "mixing_sample_torch",
    "sample_torch",
    "model_sampling_from_comfy",
    "noised_latents_torch",
    "to_jax",
    "to_torch",
    "torch_noise",
    "IterativeMixingKSamplerAdvancedJax",
    "IterativeMixingKSamplerJax",
    "IterativeMixingSamplerJax",
    "LatentBatchStatisticsJax",
    "STATS_NODE_ID",
    "iterative_mixing_ksampler_advanced_comfy",
    "iterative_mixing_ksampler_comfy",
    "iterative_mixing_sampler_comfy",
    "latent_batch_statistics",
]

_PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"

# Declared, not assigned: made by `__getattr__` on first access (the node loading path).
NODE_CLASS_MAPPINGS: dict[str, type]
"""Every V1 node of the package, by id: what ComfyUI reads from a node pack. Reading it defaults
`XLA_PYTHON_CLIENT_PREALLOCATE` to `false` (JAX, loaded later, leaves torch's GPU memory alone);
`import torch_bridge` alone changes no environment."""
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str]
"""The display names of the V1 nodes, by id (made with `NODE_CLASS_MAPPINGS`)."""


def __getattr__(name: str) -> Any:
    """`NODE_CLASS_MAPPINGS` (every V1 node of the package, by id: what ComfyUI reads from a node
    pack) and `NODE_DISPLAY_NAME_MAPPINGS` (their display names), made on first access: the
    node loading path, which alone defaults `XLA_PYTHON_CLIENT_PREALLOCATE` to `false` (so JAX,
    loaded later, leaves torch's GPU memory alone); `import torch_bridge` changes no environment."""
    if name not in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    os.environ.setdefault(_PREALLOCATE, "false")
    classes = {
        **_node.NODE_CLASS_MAPPINGS,
        _inversion_node.INVERSION_NODE_ID: _inversion_node.InvertedBatchUnsamplerJax,
        _stats_node.STATS_NODE_ID: _stats_node.LatentBatchStatisticsJax,
        **_mixing_node.NODE_CLASS_MAPPINGS,
    }
    names = {
        **_node.NODE_DISPLAY_NAME_MAPPINGS,
        _inversion_node.INVERSION_NODE_ID: _inversion_node.INVERSION_DISPLAY_NAME,
        _stats_node.STATS_NODE_ID: _stats_node.STATS_DISPLAY_NAME,
        **_mixing_node.NODE_DISPLAY_NAME_MAPPINGS,
    }
    globals().update(NODE_CLASS_MAPPINGS=classes, NODE_DISPLAY_NAME_MAPPINGS=names)
    return globals()[name]
