"""Reading a ComfyUI MODEL: its model sampling and latent format, as jax_unsampler objects.

No ComfyUI import: the objects are recognised by their class names and read through their
attributes (`sigmas`, `log_sigmas`, `shift`, `multiplier`, `sigma_data`, `scale_factor`, ...),
the same way whichever ComfyUI version made them. Nothing is moved to a device and no model
weights are touched: only the small sampling tables are read.
"""

from __future__ import annotations

from typing import Any

import torch

# ComfyUI sampling class -> the jax_unsampler parameterisation of its sigma/timestep maps.
_SAMPLING_CLASSES = {
    "ModelSamplingDiscrete": "discrete",
    "ModelSamplingDiscreteEDM": "continuous_edm",  # a discrete table with the EDM maps
    "ModelSamplingContinuousEDM": "continuous_edm",
    "ModelSamplingContinuousV": "continuous_v",
    "ModelSamplingCosmosRFlow": "cosmos_rflow",
    "ModelSamplingDiscreteFlow": "discrete_flow",
    "ModelSamplingFlux": "flux",
    "StableCascadeSampling": "stable_cascade",
}

# The model type ComfyUI pairs with a parameterisation and a prediction mixin.
_PAIRS = {
    ("discrete", "EPS"): "EPS",
    ("discrete", "V_PREDICTION"): "V_PREDICTION",
    ("discrete", "IMG_TO_IMG"): "IMG_TO_IMG",
    ("continuous_edm", "EDM"): "EDM",
    ("continuous_edm", "V_PREDICTION"): "V_PREDICTION_EDM",
    ("continuous_v", "V_PREDICTION"): "V_PREDICTION_CONTINUOUS",
    ("cosmos_rflow", "COSMOS_RFLOW"): "FLOW_COSMOS",
    ("discrete_flow", "CONST"): "FLOW",
    ("flux", "CONST"): "FLUX",
    ("stable_cascade", "EPS"): "STABLE_CASCADE",
}
# Without a known mixin (or with an unusual one): the type ComfyUI uses the class for.
_DEFAULT_TYPE = {
    "discrete": "EPS",
    "continuous_edm": "EDM",
    "continuous_v": "V_PREDICTION_CONTINUOUS",
    "cosmos_rflow": "FLOW_COSMOS",
    "discrete_flow": "FLOW",
    "flux": "FLUX",
    "stable_cascade": "STABLE_CASCADE",
}
# ComfyUI's prediction mixins, most derived first (EDM and IMG_TO_IMG derive from others).
_MIXINS = ("EDM", "IMG_TO_IMG", "X0", "V_PREDICTION", "COSMOS_RFLOW", "CONST", "EPS")
# For a class we do not know: a model type carrying the mixin's noise scaling.
_MIXIN_TYPE = {
    "EPS": "EPS",
    "V_PREDICTION": "V_PREDICTION",
    "EDM": "EDM",
    "X0": "EPS",
    "IMG_TO_IMG": "IMG_TO_IMG",
    "COSMOS_RFLOW": "FLOW_COSMOS",
    "CONST": "FLOW",
}

_NOT_A_MODEL = (
    "expected a ComfyUI MODEL: a ModelPatcher (with get_model_object), an older ModelPatcher "
    "(with .model.{name}) or a bare model (with .{name})"
)


def comfy_model_object(model: Any, name: str, *, fn: str = "comfy_model_object") -> Any:
    """An object of a ComfyUI MODEL, found the way ComfyUI's own code finds it.

    A current ModelPatcher answers `get_model_object(name)` (which honours object patches, such
    as those of the ModelSampling* nodes); an older one keeps it at `model.model.<name>`; a bare
    model (a `BaseModel`) at `model.<name>`. Never loads the model onto a device.

    **Arguments:**

    - `model`: the MODEL.
    - `name`: `"model_sampling"` or `"latent_format"`.
    - `fn`: the name to put in error messages.

    **Returns:** the object. Raises `ValueError` naming the model's type when none is found.
    """
    if model is None:
        raise ValueError(f"{fn}: got None; " + _NOT_A_MODEL.format(name=name))
    getter = getattr(model, "get_model_object", None)
    if callable(getter):
        try:
            found = getter(name)
        except (AttributeError, KeyError):
            found = None
        if found is not None:
            return found
    inner = getattr(model, "model", None)
    if inner is not None and getattr(inner, name, None) is not None:
        return getattr(inner, name)
    if getattr(model, name, None) is not None:
        return getattr(model, name)
    raise ValueError(
        f"{fn}: cannot find a {name} in a {type(model).__name__}; " + _NOT_A_MODEL.format(name=name)
    )


def _class_names(obj) -> list[str]:
    return [c.__name__ for c in type(obj).__mro__]


def _map_class(obj) -> str | None:
    """The first class of `obj` (most derived first) that defines the sigma/timestep maps."""
    for cls in type(obj).__mro__:
        if cls in (object, torch.nn.Module) or cls.__name__ in _MIXINS:
            continue
        if "sigma" in vars(cls) or "timestep" in vars(cls):
            return cls.__name__
    return None


def _mixin(obj) -> str | None:
    names = _class_names(obj)
    for mixin in _MIXINS:
        if mixin in names:
            return mixin
    return None


def _table(fn: str, obj, attr: str):
    import numpy as np

    value = getattr(obj, attr, None)
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    try:
        table = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        kind = type(value).__name__
        raise ValueError(f"{fn}: the model sampling's {attr} is not numeric ({kind})") from None
    return table.reshape(-1) if table.ndim == 0 else table


def _number(fn: str, obj, attr: str, default: float) -> float:
    value = getattr(obj, attr, default)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().reshape(-1)[0].item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: the model sampling's {attr} is not a number: {value!r}") from None


def model_sampling_from_comfy(model):
    """The `jax_unsampler` model sampling of a ComfyUI MODEL (or of its sampling object).

    The sampling object is read with `comfy_model_object(model, "model_sampling")`, so a
    current ModelPatcher, an older one and a bare model all work, as does passing the sampling
    object itself. Its own float32 table (`sigmas`, and `log_sigmas` where it has them) is
    used as it is, so the schedules equal ComfyUI's for any settings (zero terminal SNR, custom
    betas, patched shifts). The sigma/timestep maps follow its class: ComfyUI's
    `ModelSamplingDiscrete`, `ModelSamplingDiscreteEDM`, `ModelSamplingContinuousEDM`,
    `ModelSamplingContinuousV`, `ModelSamplingCosmosRFlow`, `ModelSamplingDiscreteFlow`
    (`shift`, `multiplier`), `ModelSamplingFlux` (`shift`) and `StableCascadeSampling`
    (`shift`), subclasses that keep their maps included. A class whose maps are unknown gets
    ComfyUI's discrete maps over its table (`jax_unsampler.model_sampling_from_table`).
    The model type (which decides the noise scaling of `mode="model"`) comes from the
    prediction mixin (`EPS`, `V_PREDICTION`, `EDM`, `CONST`, ...) as ComfyUI pairs them.

    **Arguments:**

    - `model`: a ComfyUI MODEL, or a model sampling object (anything with a `sigmas` table).

    **Returns:** a `jax_unsampler.ModelSampling`.
    """

    import jax_unsampler as ju

    fn = "model_sampling_from_comfy"
    ms = model
    if getattr(model, "sigmas", None) is None:
        ms = comfy_model_object(model, "model_sampling", fn=fn)
    sigmas = _table(fn, ms, "sigmas")
    if sigmas is None:
        raise ValueError(
            f"{fn}: the model sampling object ({type(ms).__name__}) has no 'sigmas' table to read"
        )
    map_class = _map_class(ms) or ""
    kind = _SAMPLING_CLASSES.get(map_class)
    mixin = _mixin(ms) or ""
    if kind is None:
        model_type = _MIXIN_TYPE.get(mixin, "EPS")
        kind = "discrete"
    else:
        model_type = _PAIRS.get((kind, mixin), _DEFAULT_TYPE[kind])
    log_sigmas = _table(fn, ms, "log_sigmas")
    try:
        return ju.model_sampling_from_table(
            sigmas,
            model_type,
            parameterisation=kind,
            log_sigmas=log_sigmas if log_sigmas is not None and log_sigmas.shape == sigmas.shape else None,
            shift=_number(fn, ms, "shift", 1.0),
            multiplier=_number(fn, ms, "multiplier", 1000.0),
            sigma_data=_number(fn, ms, "sigma_data", 1.0),
        )
    except ValueError as err:
        raise ValueError(f"{fn}: {type(ms).__name__} has an unusable sigma table: {err}") from None


def _latent_format_object(fn: str, model: Any) -> Any:
    if getattr(model, "scale_factor", None) is not None:
        return model
    return comfy_model_object(model, "latent_format", fn=fn)


def check_latent_fits_model(fn: str, model: Any, shape: tuple[int, ...]) -> None:
    """Refuse a latent that does not fit a ComfyUI MODEL's latent format (its `latent_channels`
    and `latent_dimensions`, as every ComfyUI format declares; a format without them is not
    checked): the rule of `jax_unsampler._validation.check_latent_fits`, the command's too."""
    from jax_unsampler._validation import check_latent_fits

    lf = _latent_format_object(fn, model)
    channels = getattr(lf, "latent_channels", None)
    if not isinstance(channels, int):
        return
    dimensions = getattr(lf, "latent_dimensions", None)
    name = type(lf).__name__
    check_latent_fits(
        fn, shape, f"the model ({name})", channels, dimensions if isinstance(dimensions, int) else None
    )


def latent_scale_factor(model) -> float:
    """The latent scale factor of a ComfyUI MODEL: what the original node divides sigmas by.

    Read from the latent format (`get_model_object("latent_format")`, `model.model.latent_format`
    or `model.latent_format`); a latent format object itself is accepted too.

    **Returns:** a positive float (0.18215 for SD1.5, 0.13025 for SDXL, ...).
    """
    fn = "latent_scale_factor"
    value = _number(fn, _latent_format_object(fn, model), "scale_factor", float("nan"))
    if not value > 0:
        raise ValueError(f"{fn}: the latent format's scale_factor must be positive, got {value!r}")
    return value


def _floats(value) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return tuple(float(v) for v in value.detach().cpu().reshape(-1).tolist())
    return tuple(_floats(v) if isinstance(v, (list, tuple)) else float(v) for v in value)


def latent_format_from_comfy(model):
    """The `jax_unsampler.LatentFormat` of a ComfyUI MODEL (or of a latent format object).

    Reads `scale_factor`, `shift_factor`, per-channel `latents_mean` / `latents_std` (tensors
    of any shape, flattened to one value per channel) and the RGB preview factors. Only these
    numbers are used: a format that overrides `process_in` with other arithmetic is read as if
    it used ComfyUI's standard one.

    **Returns:** a `jax_unsampler.LatentFormat` named after the format's class.
    """
    import jax_unsampler as ju

    fn = "latent_format_from_comfy"
    lf = _latent_format_object(fn, model)
    mean, std = _floats(getattr(lf, "latents_mean", None)), _floats(getattr(lf, "latents_std", None))
    if (mean is None) != (std is None) or (mean is not None and std is not None and len(mean) != len(std)):
        raise ValueError(f"{fn}: {type(lf).__name__} has latents_mean and latents_std that do not match")
    bias = _floats(getattr(lf, "latent_rgb_factors_bias", None))
    return ju.LatentFormat(
        name=type(lf).__name__,
        scale_factor=latent_scale_factor(lf),
        shift_factor=_number(fn, lf, "shift_factor", 0.0) if getattr(lf, "shift_factor", None) else 0.0,
        latents_mean=mean,
        latents_std=std,
        rgb_factors=_floats(getattr(lf, "latent_rgb_factors", None)),
        rgb_bias=bias,
    )
