"""Every sampler's step, by name (the one registry), and the blends of iterative mixing.

The protocol is `_step_base.py`'s; the steps live in one module per family (`_steps_ode.py`,
`_steps_multistep.py`, `_steps_ancestral.py`, ...), each step written once for JAX arrays and
torch tensors alike. `SAMPLER_STEPS` is the only place a sampler's name is looked up: the JAX
loop (`_sampling.py`) and the torch loop (`torch_bridge._sampling`) drive every sampler through
it, and the name tables of `_names` list its keys.

Shared rules:

- The slope `d(x, sigma) = (x - D(x, sigma)) / sigma` is evaluated at `INVERSION_ZERO_SIGMA`
  where `sigma` is 0 (the ODE's 0/0): inversion's first step. The samplers whose formulas
  cannot start there take the Euler step instead (`Sampler.steps_from_zero`).
- `blend` is the mixing sampler's blend with the step's noised entry (the identity when
  sampling or inverting): after the step, or, for the samplers that re-noise
  (`Sampler.blend_before_noise`), between denoising and re-noising, as ComfyUI-Iterative-Mixer
  places it for LCM.
"""

from __future__ import annotations

from . import (
    _steps_ancestral,
    _steps_dpm_solver,
    _steps_multistep,
    _steps_ode,
    _steps_sa_solver,
    _steps_sde,
    _steps_unipc,
)
from ._step_base import (
    Array,
    Context,
    Ops,
    Sampler,
    Sigmas,
    ancestral_step,
    apply_noise,
    at_sigma,
    half_log_snr,
    no_model_sampling,
    no_state,
    sigma_of_half_log_snr,
    to_d,
)

SAMPLER_STEPS: dict[str, Sampler] = {
    **_steps_ode.SAMPLERS,
    **_steps_multistep.SAMPLERS,
    **_steps_ancestral.SAMPLERS,
    **_steps_sde.SAMPLERS,
    **_steps_sa_solver.SAMPLERS,
    **_steps_unipc.SAMPLERS,
    **_steps_dpm_solver.SAMPLERS,
}
"""The sampler of each name (the keys of `_names.SAMPLER_FAMILIES`)."""


def sampler_options(fn: str, sampler: str, options: object) -> tuple[tuple[str, object], ...]:
    """`options` (a mapping of the sampler's option names, or None) with the defaults filled
    in, as sorted `(name, value)` pairs (static, hashable); unknown names refused in one line."""
    spec = SAMPLER_STEPS[sampler]
    defaults = dict(spec.options)
    given = {} if options is None else options
    if not isinstance(given, dict):
        raise TypeError(
            f"{fn}: options must be a dict of {sampler}'s options or None, got {type(given).__name__}"
        )
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        raise ValueError(f"{fn}: sampler {sampler!r} has no option {unknown[0]!r}; its options: {valid}")
    for name, value in given.items():
        default = defaults[name]
        if isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        if not ok:
            raise ValueError(
                f"{fn}: {sampler} option {name!r} must be a Python {type(default).__name__} "
                f"(static), got {value!r}"
            )
    for name, values in spec.choices:
        value = given.get(name, defaults[name])
        if value not in values:
            valid = (
                f"an int from {values.start} to {values.stop - 1}"
                if isinstance(values, range)
                else "one of " + ", ".join(repr(v) for v in values)
            )
            raise ValueError(f"{fn}: {sampler} option {name!r} must be {valid}, got {value!r}")
    merged = {**defaults, **given}
    return tuple(sorted((k, float(v) if isinstance(defaults[k], float) else v) for k, v in merged.items()))


__all__ = [
    "Array", "BLENDS", "Context", "Ops", "SAMPLER_STEPS", "Sampler", "Sigmas", "ancestral_step",
    "apply_noise", "at_sigma", "half_log_snr", "match_normalize", "no_model_sampling", "no_state",
    "sampler_options",
    "sigma_of_half_log_snr", "to_d",
]  # fmt: skip


# --- the blends of iterative mixing (ComfyUI-Iterative-Mixer's blending functions) -----------


def addition(ops: Ops, noised: Array, x: Array, w: Array, noised_norm: Array | None = None) -> Array:
    """`(1 - w) noised + w x`."""
    return (1 - w) * noised + w * x


def item_norm(ops: Ops, flat: Array) -> Array:
    """Each item's Euclidean norm, `(B, 1)`, of a flattened `(B, n)` batch."""
    return ops.sqrt(ops.item_sum(flat * flat))


def slerp(ops: Ops, noised: Array, x: Array, w: Array, noised_norm: Array | None = None) -> Array:
    """Spherical interpolation of each item, flattened; `noised_norm`: its norms where known.

    Where the two are parallel (their cosine rounds to 1 or above: `omega = 0`, the original's
    0/0 NaN), its limit, the linear blend `(1 - w) noised + w x`."""
    low, high = ops.flat(noised), ops.flat(x)
    # cos(omega) = (low / |low|) . (high / |high|), 0 where either is the zero vector (the original
    # sets those unit vectors' NaNs to 0), as one dot product over the two norms.
    norms = (item_norm(ops, low) if noised_norm is None else noised_norm) * item_norm(ops, high)
    dot = ops.item_sum(low * high)
    cos = ops.where(norms == 0, 0.0, dot / norms)
    parallel = cos >= 1.0
    omega = ops.arccos(ops.where(parallel, 0.5, cos))  # any angle off 0 where the limit is used
    so = ops.sin(omega)
    w = ops.column(w, low.shape[0])
    out = (ops.sin((1.0 - w) * omega) / so) * low + (ops.sin(w * omega) / so) * high
    out = ops.where(parallel, (1.0 - w) * low + w * high, out)
    return out.reshape(noised.shape)


def norm_only(ops: Ops, noised: Array, x: Array, w: Array, noised_norm: Array | None = None) -> Array:
    """`noised + w (|noised| x / |x| - noised)`, per item."""
    a, b = ops.flat(noised), ops.flat(x)
    a_norm = item_norm(ops, a) if noised_norm is None else noised_norm
    out = a + ops.column(w, a.shape[0]) * (b / item_norm(ops, b) * a_norm - a)
    return out.reshape(noised.shape)


BLENDS = {"addition": addition, "slerp": slerp, "norm_only": norm_only}
"""The blending function of each name of `BLENDING_FUNCTIONS`."""


def match_normalize(ops: Ops, x: Array, reference: Array) -> Array:
    """Per item and channel (axis 1), `x`'s mean and unbiased std over the remaining axes set
    to `reference`'s (the mixing sampler's `normalize_on_mean`; `check_normalize_on_mean` says
    which latents it takes)."""
    (tm, ts), (sm, ss) = ops.channel_stats(x), ops.channel_stats(reference)
    return (x - tm) / ts * ss + sm
