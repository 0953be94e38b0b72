"""Test doubles of ComfyUI's MODEL objects, built from the golden data (no ComfyUI needed).

The classes carry ComfyUI's class names and attributes (that is all torch_bridge reads); their
tables are the float32 tables recorded from ComfyUI itself in `tests/data/sigmas.json.gz`.
Their `sigma`/`timestep` methods exist (torch_bridge looks for the class that defines the
maps) but must never be called.
"""

from __future__ import annotations

import numpy as np
import torch
from conftest import golden_sigmas


# ComfyUI's prediction mixins (only the names and the inheritance matter).
class EPS:
    pass


class V_PREDICTION(EPS):
    pass


class EDM(V_PREDICTION):
    pass


class CONST:
    pass


class COSMOS_RFLOW:
    pass


def _never(self, value):
    raise AssertionError("torch_bridge must not call the sampling object's maps")


class _Maps(torch.nn.Module):
    # Every ComfyUI sampling class defines its own sigma/timestep maps; so does each double.
    def _tables(self, table, log_table=True):
        sigmas = torch.tensor(np.asarray(table, np.float32))
        self.register_buffer("sigmas", sigmas)
        if log_table:
            self.register_buffer("log_sigmas", sigmas.log())


class ModelSamplingDiscrete(_Maps):
    sigma = timestep = _never

    def __init__(self, table, settings):
        super().__init__()
        self._tables(table)
        self.sigma_data = 1.0
        self.num_timesteps = len(table)


class ModelSamplingContinuousEDM(_Maps):
    sigma = timestep = _never

    def __init__(self, table, settings):
        super().__init__()
        self._tables(table)
        self.sigma_data = settings.get("sigma_data", 1.0)


class ModelSamplingContinuousV(ModelSamplingContinuousEDM):
    sigma = timestep = _never


class ModelSamplingCosmosRFlow(ModelSamplingContinuousEDM):
    sigma = timestep = _never


class ModelSamplingDiscreteFlow(_Maps):
    sigma = timestep = _never

    def __init__(self, table, settings):
        super().__init__()
        self._tables(table, log_table=False)
        self.shift = settings.get("shift", 1.0)
        self.multiplier = settings.get("multiplier", 1000)


class ModelSamplingFlux(_Maps):
    sigma = timestep = _never

    def __init__(self, table, settings):
        super().__init__()
        self._tables(table, log_table=False)
        self.shift = settings.get("shift", 1.15)


class StableCascadeSampling(ModelSamplingDiscrete):
    def __init__(self, table, settings):
        super().__init__(table, settings)
        self.shift = settings.get("shift", 1.0)
        self.cosine_s = torch.tensor(8e-3)

    sigma = timestep = _never


# model_type -> (sampling class, mixin), as ComfyUI's model_base pairs them.
PAIRS = {
    "EPS": (ModelSamplingDiscrete, EPS),
    "V_PREDICTION": (ModelSamplingDiscrete, V_PREDICTION),
    "V_PREDICTION_EDM": (ModelSamplingContinuousEDM, V_PREDICTION),
    "EDM": (ModelSamplingContinuousEDM, EDM),
    "FLOW": (ModelSamplingDiscreteFlow, CONST),
    "FLUX": (ModelSamplingFlux, CONST),
    "STABLE_CASCADE": (StableCascadeSampling, EPS),
    "V_PREDICTION_CONTINUOUS": (ModelSamplingContinuousV, V_PREDICTION),
    "FLOW_COSMOS": (ModelSamplingCosmosRFlow, COSMOS_RFLOW),
}


def model_sampling(family: str, *, with_mixin: bool = True):
    """A ComfyUI-like model sampling object of a golden family.

    With the mixin it is built as ComfyUI builds it: a class `ModelSampling(SamplingClass,
    Mixin)` that defines nothing itself; without, the bare sampling class.
    """
    fam = golden_sigmas()["families"][family]
    cls, mixin = PAIRS[fam["model_type"]]
    if with_mixin:
        cls = type("ModelSampling", (cls, mixin), {})
    return cls(fam["sigma_table"], fam["sampling_settings"])


def latent_format(family: str):
    """A ComfyUI-like latent format object (class named as ComfyUI's) of a golden family."""
    record = golden_sigmas()["families"][family]["latent_format"]
    obj = type(record["class"], (), {})()
    obj.scale_factor = record["scale_factor"]
    if record.get("shift_factor") is not None:
        obj.shift_factor = record["shift_factor"]
    if record.get("latents_mean") is not None:
        channels = len(record["latents_mean"])
        obj.latents_mean = torch.tensor(record["latents_mean"]).view(1, channels, 1, 1)
        obj.latents_std = torch.tensor(record["latents_std"]).view(1, channels, 1, 1)
    obj.latent_rgb_factors = record.get("latent_rgb_factors")
    obj.latent_rgb_factors_bias = record.get("latent_rgb_factors_bias")
    return obj


class BaseModel(torch.nn.Module):
    """A stand-in for ComfyUI's BaseModel: a tiny module with model_sampling and latent_format."""

    def __init__(self, family: str):
        super().__init__()
        self.model_sampling = model_sampling(family)
        self.latent_format = latent_format(family)
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.device = torch.device("cpu")


class _NoLoading:
    """Loading methods of a ModelPatcher: torch_bridge must never call them."""

    def _loaded(self, *args, **kwargs):
        raise AssertionError("torch_bridge must not load the model onto a device")

    patch_model = load = partially_load = model_patches_to = unpatch_model = _loaded


class ModelPatcher(_NoLoading):
    """A current ModelPatcher: `get_model_object` honours object patches, as ComfyUI's does."""

    def __init__(self, model, load_device="cpu", offload_device="cpu"):
        self.model = model
        self.load_device, self.offload_device = load_device, offload_device
        self.object_patches = {}
        self.object_patches_backup = {}
        self.get_model_object_calls = []

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def get_model_object(self, name):
        self.get_model_object_calls.append(name)
        if name in self.object_patches:
            return self.object_patches[name]
        if name in self.object_patches_backup:
            return self.object_patches_backup[name]
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj


class OldModelPatcher(_NoLoading):
    """A ModelPatcher of before mid-2024: no `get_model_object`, the model at `.model`."""

    def __init__(self, model):
        self.model = model


def patcher(family: str) -> ModelPatcher:
    return ModelPatcher(BaseModel(family))
