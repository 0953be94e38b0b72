"""A diffusion model's sigma table and its `timestep`/`sigma` maps, for every ComfyUI model type.

ComfyUI gives each model a "model sampling" object: an ascending float32 table of the sigmas
the model was trained on, plus two maps between a sigma and the model's timestep. Schedulers
read nothing else. `ModelSampling` is that object as an immutable pytree: the table and the
numeric settings are traced leaves, the model type and the kind of parameterisation are static.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from . import _float32
from ._float32 import torch_linspace
from ._names import BETA_SCHEDULES, MODEL_TYPES, PARAMETERISATIONS
from ._validation import check_choice

# Model type -> the family of sigma <-> timestep maps ComfyUI pairs with it.
_PARAMETERISATION = {
    "EPS": "discrete",
    "V_PREDICTION": "discrete",
    "IMG_TO_IMG": "discrete",
    "V_PREDICTION_EDM": "continuous_edm",
    "EDM": "continuous_edm",
    "V_PREDICTION_CONTINUOUS": "continuous_v",
    "FLOW_COSMOS": "cosmos_rflow",
    "FLOW": "discrete_flow",
    "FLUX": "flux",
    "STABLE_CASCADE": "stable_cascade",
}

# Model type -> ComfyUI's noise_scaling rule (see `noised_latents`): CONST for rectified flow.
_NOISE_SCALING = {t: ("const" if t in ("FLOW", "FLUX") else "eps") for t in MODEL_TYPES}


def noise_scaling_of(model_type: str) -> str:
    """How ComfyUI mixes noise into a latent for a model type: `"eps"` or `"const"`.

    **Arguments:**

    - `model_type`: one of `MODEL_TYPES` (ComfyUI's names, e.g. `"EPS"`, `"FLOW"`).

    **Returns:** `"eps"` (`x + sigma * eps`: EPS, V, EDM, Stable Cascade, Cosmos) or `"const"`
    (`sigma * eps + (1 - sigma) * x`: FLOW, FLUX), one of `NOISE_SCALINGS`.
    """
    return _NOISE_SCALING[check_choice("noise_scaling_of", "model_type", model_type, MODEL_TYPES)]


# Every setting a parameterisation reads, with ComfyUI's default.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "discrete": {
        "beta_schedule": "linear",
        "linear_start": 0.00085,
        "linear_end": 0.012,
        "timesteps": 1000,
        "zsnr": False,
    },
    "continuous_edm": {"sigma_min": 0.002, "sigma_max": 120.0, "sigma_data": 1.0},
    "continuous_v": {"sigma_min": 0.002, "sigma_max": 120.0, "sigma_data": 1.0},
    "cosmos_rflow": {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 1.0},
    # ComfyUI reads sigma_data from the settings only for the continuous types; the others keep 1.
    "discrete_flow": {"shift": 1.0, "multiplier": 1000.0},
    "flux": {"shift": 1.15},
    "stable_cascade": {"shift": 1.0},
}
SAMPLING_SETTINGS = tuple(sorted({k for d in _DEFAULTS.values() for k in d}))
"""Every `sampling_settings` key some model type reads; others are ignored with a warning."""

_ZSNR_LAST_ALPHA_CUMPROD = 4.8973451890853435e-08
_COSINE_S = 8e-3
_FLOW_TIMESTEPS = 1000
_FLUX_TIMESTEPS = 10000
_CASCADE_TIMESTEPS = 10000
_CONTINUOUS_TABLE = 1000


def _zero(x=0.0):
    return jnp.asarray(x, jnp.float32)


class ModelSampling(struct.PyTreeNode):
    """A model's sigma table and sigma/timestep maps (ComfyUI's `model_sampling` object).

    Build one with `model_sampling(model_type, settings)`, `preset(name).model_sampling` or
    `model_sampling_from_table(sigmas, ...)`, which validate what they are given; the fields
    are an implementation detail.

    **Attributes:**

    - `sigmas`: the ascending float32 sigma table.
    - `log_sigmas`: its logarithm (what discrete models interpolate in).
    - `sigma_min`, `sigma_max`: the first and last entries of the table.
    - `model_type`: ComfyUI's model type name (static).
    """

    sigmas: jax.Array
    log_sigmas: jax.Array
    shift: jax.Array = struct.field(default_factory=lambda: _zero(1.0))
    multiplier: jax.Array = struct.field(default_factory=lambda: _zero(1000.0))
    sigma_data: jax.Array = struct.field(default_factory=lambda: _zero(1.0))
    # Stable Cascade's cosine offset, and pi itself, as traced values: XLA rewrites a division
    # by a compile-time constant into a multiplication by its reciprocal, which rounds
    # differently from ComfyUI's division, and these maps are ill-conditioned near the top sigma.
    cosine_s: jax.Array = struct.field(default_factory=lambda: _zero(_COSINE_S))
    pi: jax.Array = struct.field(default_factory=lambda: _zero(math.pi))
    model_type: str = struct.field(pytree_node=False, default="EPS")
    parameterisation: str = struct.field(pytree_node=False, default="discrete")
    # ddim_uniform's schedule length depends on whether the table's second entry is ~0;
    # recorded when the table is concrete so it stays known under jit.
    second_sigma_is_zero: bool = struct.field(pytree_node=False, default=False)

    @property
    def sigma_min(self) -> jax.Array:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> jax.Array:
        return self.sigmas[-1]

    def timestep(self, sigma: ArrayLike) -> jax.Array:
        """The model's timestep for `sigma` (an integer table index for discrete models)."""
        return _MAPS[self.parameterisation].timestep(self, jnp.asarray(sigma, jnp.float32))

    def sigma(self, timestep: ArrayLike) -> jax.Array:
        """The sigma at `timestep` (fractional timesteps interpolate for discrete models)."""
        return _MAPS[self.parameterisation].sigma(self, jnp.asarray(timestep).astype(jnp.float32))

    def _cascade_init(self) -> jax.Array:
        s = self.cosine_s
        return jnp.cos(s / (1 + s) * self.pi * 0.5) ** 2


# The sigma <-> timestep maps of each parameterisation, as ComfyUI's sampling classes define
# them; `ms` is the ModelSampling, the second argument a float32 array.


def _discrete_timestep(ms: ModelSampling, sigma: jax.Array) -> jax.Array:
    dists = jnp.abs(jnp.log(sigma)[None] - ms.log_sigmas.reshape((-1,) + (1,) * sigma.ndim))
    return jnp.argmin(dists, axis=0).astype(jnp.int32)


def _discrete_sigma(ms: ModelSampling, t: jax.Array) -> jax.Array:
    t = jnp.clip(t, 0, ms.sigmas.shape[0] - 1)
    lo, hi = jnp.floor(t), jnp.ceil(t)
    w = t - lo
    return jnp.exp((1 - w) * ms.log_sigmas[lo.astype(jnp.int32)] + w * ms.log_sigmas[hi.astype(jnp.int32)])


def _cosmos_sigma(ms: ModelSampling, t: jax.Array) -> jax.Array:
    top = ms.sigma_max
    return jnp.where(t >= top / (top + 1), top, t / (1 - t))


def _flux_sigma(ms: ModelSampling, t: jax.Array) -> jax.Array:
    e = jnp.exp(ms.shift)
    return e / (e + (1 / t - 1))


def _cascade_timestep(ms: ModelSampling, sigma: jax.Array) -> jax.Array:
    var = jnp.clip(1 / (sigma * sigma + 1), 0.0, 1.0)
    s = ms.cosine_s
    angle = jnp.arccos(jnp.sqrt(var * ms._cascade_init()))
    scaled = _float32.divide(angle, ms.pi * 0.5) * (1 + s)
    # Rounded before the subtraction, as in ComfyUI; fused into an FMA it is an ulp off, and the
    # top timestep is where the schedules are most sensitive.
    return _float32.rounded(scaled) - s


def _cascade_sigma(ms: ModelSampling, t: jax.Array) -> jax.Array:
    s, shift, t = ms.cosine_s, ms.shift, _float32.rounded(t)
    angle = _float32.divide(t + s, 1 + s) * ms.pi * 0.5
    alpha_cumprod = _float32.divide(jnp.cos(angle) ** 2, ms._cascade_init())
    log_snr = jnp.log(alpha_cumprod / (1 - alpha_cumprod)) + 2 * jnp.log(1.0 / shift)
    alpha_cumprod = jnp.where(shift != 1.0, jax.nn.sigmoid(log_snr), alpha_cumprod)
    alpha_cumprod = jnp.clip(alpha_cumprod, 0.0001, 0.9999)
    return jnp.sqrt((1 - alpha_cumprod) / alpha_cumprod)


class _Maps(NamedTuple):
    timestep: Callable[[ModelSampling, jax.Array], jax.Array]
    sigma: Callable[[ModelSampling, jax.Array], jax.Array]


_MAPS = {
    "discrete": _Maps(_discrete_timestep, _discrete_sigma),
    "continuous_edm": _Maps(lambda ms, s: 0.25 * jnp.log(s), lambda ms, t: jnp.exp(t / 0.25)),
    "continuous_v": _Maps(
        lambda ms, s: _float32.divide(_float32.arctan(s), ms.pi) * 2, lambda ms, t: jnp.tan(t * math.pi / 2)
    ),
    "cosmos_rflow": _Maps(lambda ms, s: s / (s + 1), _cosmos_sigma),
    "discrete_flow": _Maps(
        lambda ms, s: s * ms.multiplier,
        lambda ms, t: _time_snr_shift(ms.shift, _float32.divide(t, ms.multiplier)),
    ),
    "flux": _Maps(lambda ms, s: s, _flux_sigma),
    "stable_cascade": _Maps(_cascade_timestep, _cascade_sigma),
}
assert tuple(_MAPS) == PARAMETERISATIONS


def _time_snr_shift(shift, t):
    # Exactly t when shift == 1 (shift * t == t and (shift - 1) * t == 0 in float32).
    return shift * t / (1 + (shift - 1) * t)


def _betas(schedule: str, n: int, start: float, end: float) -> np.ndarray:
    """Float64 betas of a discrete schedule (ComfyUI's `make_beta_schedule`)."""
    if schedule == "linear":
        return np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    if schedule == "sqrt_linear":
        return np.linspace(start, end, n, dtype=np.float64)
    if schedule == "sqrt":
        return np.linspace(start, end, n, dtype=np.float64) ** 0.5
    if schedule == "cosine":
        t = np.arange(n + 1, dtype=np.float64) / n + _COSINE_S
        alphas = np.cos(t / (1 + _COSINE_S) * np.pi / 2) ** 2
        alphas = alphas / alphas[0]
        return np.clip(1 - alphas[1:] / alphas[:-1], 0, 0.999)
    if schedule == "squaredcos_cap_v2":

        def alpha_bar(t):
            return np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2

        t = np.arange(n + 1, dtype=np.float64) / n
        return np.minimum(1 - alpha_bar(t[1:]) / alpha_bar(t[:-1]), 0.999)
    raise AssertionError(schedule)


def _rescale_zero_terminal_snr(sigmas: np.ndarray) -> np.ndarray:
    """Lin et al.'s zero-terminal-SNR rescaling of a float64 sigma table."""
    sqrt_ac = np.sqrt(1 / (sigmas * sigmas + 1))
    first, last = sqrt_ac[0], sqrt_ac[-1]
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    ac = sqrt_ac**2
    ac[-1] = _ZSNR_LAST_ALPHA_CUMPROD
    return np.sqrt((1 - ac) / ac)


def _discrete_table(cfg: Mapping[str, Any]) -> np.ndarray:
    betas = _betas(cfg["beta_schedule"], cfg["timesteps"], cfg["linear_start"], cfg["linear_end"])
    alphas_cumprod = np.cumprod(1.0 - betas)
    sigmas = np.sqrt((1 - alphas_cumprod) / alphas_cumprod)
    if cfg["zsnr"]:
        sigmas = _rescale_zero_terminal_snr(sigmas)
    return sigmas  # float64; the caller stores float32 and float32(log(float64))


def _check_settings(model_type: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    fn = "model_sampling"
    kind = _PARAMETERISATION[model_type]
    reads = tuple(_DEFAULTS[kind])
    for key in settings:
        if key not in SAMPLING_SETTINGS:  # a typo, or a setting of no model type
            close = difflib.get_close_matches(str(key), reads, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{fn}: unknown sampling_settings key {key!r}{hint}; {model_type} reads {', '.join(reads)}"
            )
        # Another model type's setting is ignored, as ComfyUI ignores it: its own model configs
        # carry some (FLUX's has a multiplier), so a warning would fire on every preset.
    cfg = {k: settings.get(k, v) for k, v in _DEFAULTS[kind].items()}
    for key, value in cfg.items():
        if key == "beta_schedule":
            check_choice(fn, "beta_schedule", value, BETA_SCHEDULES)
        elif key == "zsnr":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{fn}: zsnr must be True or False, got {value!r}")
        elif key == "timesteps":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                raise ValueError(f"{fn}: timesteps must be an integer >= 2, got {value!r}")
            cfg[key] = int(value)
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{fn}: {key} must be a positive number, got {value!r}") from None
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"{fn}: {key} must be a positive finite number, got {value!r}")
            cfg[key] = number
    if kind == "discrete" and cfg["beta_schedule"] in ("linear", "sqrt_linear", "sqrt"):
        if not cfg["linear_start"] < 1 or not cfg["linear_end"] < 1:
            raise ValueError(
                f"{fn}: linear_start and linear_end must be below 1, got "
                f"{cfg['linear_start']!r} and {cfg['linear_end']!r}"
            )
    if "sigma_min" in cfg and not cfg["sigma_min"] < cfg["sigma_max"]:
        raise ValueError(
            f"{fn}: sigma_min must be below sigma_max, got {cfg['sigma_min']!r} >= {cfg['sigma_max']!r}"
        )
    return cfg


def model_sampling(model_type: str, sampling_settings: Mapping[str, Any] | None = None) -> ModelSampling:
    """ComfyUI's model sampling object for a model type and its `sampling_settings`.

    **Arguments:**

    - `model_type`: one of `MODEL_TYPES` (ComfyUI's `ModelType` names, e.g. `"EPS"`, `"FLUX"`).
    - `sampling_settings`: the model config's settings dict, as ComfyUI holds it; missing keys
      take ComfyUI's defaults (below). A key no model type reads is refused (a typo, with the
      keys the type reads); one another type reads is ignored, as ComfyUI ignores it (its
      own configs carry some). The keys, by model type, with their defaults:

      - EPS, V_PREDICTION, IMG_TO_IMG (discrete): `beta_schedule` ("linear", one of
        `BETA_SCHEDULES`), `linear_start` (0.00085), `linear_end` (0.012), `timesteps`
        (1000), `zsnr` (False);
      - EDM, V_PREDICTION_EDM (`continuous_edm`), V_PREDICTION_CONTINUOUS: `sigma_min`
        (0.002), `sigma_max` (120.0), `sigma_data` (1.0); FLOW_COSMOS: the same with
        `sigma_max` 80.0;
      - FLOW: `shift` (1.0), `multiplier` (1000.0); FLUX: `shift` (1.15); STABLE_CASCADE:
        `shift` (1.0).

    **Returns:** a `ModelSampling` whose table equals ComfyUI's float32 table.
    """
    check_choice("model_sampling", "model_type", model_type, MODEL_TYPES)
    settings = {} if sampling_settings is None else dict(sampling_settings)
    cfg = _check_settings(model_type, settings)
    kind = _PARAMETERISATION[model_type]
    with jax.ensure_compile_time_eval():
        proto = ModelSampling(
            sigmas=jnp.ones((2,), jnp.float32),
            log_sigmas=jnp.zeros((2,), jnp.float32),
            shift=_zero(cfg.get("shift", 1.0)),
            multiplier=_zero(cfg.get("multiplier", 1000.0)),
            sigma_data=_zero(cfg.get("sigma_data", 1.0)),
            model_type=model_type,
            parameterisation=kind,
        )
        sigmas, log_sigmas = _TABLES[kind](cfg, proto)
        return _finish(proto, sigmas, log_sigmas)


# The sigma table of each parameterisation: `(sigmas, log_sigmas)` from the checked settings
# and a prototype holding every other field (the flow tables are its own `sigma` map).


def _discrete_tables(cfg: Mapping[str, Any], proto: ModelSampling) -> tuple[np.ndarray, np.ndarray]:
    table64 = _discrete_table(cfg)
    return np.asarray(table64, np.float32), np.asarray(np.log(table64), np.float32)


def _continuous_tables(cfg: Mapping[str, Any], proto: ModelSampling) -> tuple[np.ndarray, np.ndarray]:
    grid = torch_linspace(math.log(cfg["sigma_min"]), math.log(cfg["sigma_max"]), _CONTINUOUS_TABLE)
    sigmas = np.asarray(jnp.exp(grid))
    return sigmas, np.log(sigmas)


def _timestep_grid(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float32) / np.float32(n)


def _flow_tables(cfg: Mapping[str, Any], proto: ModelSampling) -> tuple[np.ndarray, np.ndarray]:
    sigmas = np.asarray(proto.sigma(jnp.asarray(_timestep_grid(_FLOW_TIMESTEPS)) * proto.multiplier))
    return sigmas, np.log(sigmas)


def _flux_tables(cfg: Mapping[str, Any], proto: ModelSampling) -> tuple[np.ndarray, np.ndarray]:
    sigmas = np.asarray(proto.sigma(_timestep_grid(_FLUX_TIMESTEPS)))
    return sigmas, np.log(sigmas)


def _cascade_tables(cfg: Mapping[str, Any], proto: ModelSampling) -> tuple[np.ndarray, np.ndarray]:
    steps = (np.arange(1, _CASCADE_TIMESTEPS + 1) / _CASCADE_TIMESTEPS).astype(np.float32)
    sigmas = np.asarray(proto.sigma(steps))
    return sigmas, np.log(sigmas)


_TABLES: dict[str, Callable[[Mapping[str, Any], ModelSampling], tuple[np.ndarray, np.ndarray]]] = {
    "discrete": _discrete_tables,
    "continuous_edm": _continuous_tables,
    "continuous_v": _continuous_tables,
    "cosmos_rflow": _continuous_tables,
    "discrete_flow": _flow_tables,
    "flux": _flux_tables,
    "stable_cascade": _cascade_tables,
}


def _finish(proto: ModelSampling, sigmas: np.ndarray, log_sigmas: np.ndarray) -> ModelSampling:
    second_zero = bool(sigmas.shape[0] > 1 and abs(float(sigmas[1])) <= 1e-5)
    return proto.replace(
        sigmas=jnp.asarray(sigmas, jnp.float32),
        log_sigmas=jnp.asarray(log_sigmas, jnp.float32),
        second_sigma_is_zero=second_zero,
    )


def _positive(fn: str, what: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {what} must be a positive finite number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{fn}: {what} must be a positive finite number, got {value!r}")
    return number


def model_sampling_from_table(
    sigmas: ArrayLike,
    model_type: str = "EPS",
    *,
    parameterisation: str = "discrete",
    log_sigmas: ArrayLike | None = None,
    shift: float = 1.0,
    multiplier: float = 1000.0,
    sigma_data: float = 1.0,
) -> ModelSampling:
    """A model sampling over a given ascending sigma table: what a loaded model carries.

    With the defaults it is ComfyUI's discrete sampling over the table (nearest log-sigma index,
    log-linear interpolation), which ComfyUI uses for every discrete-table model and which suits
    a model whose sampling class is unknown. `torch_bridge` builds every ComfyUI model sampling
    with it, passing the class's maps and numbers.

    **Arguments:**

    - `sigmas`: a 1-D array of at least two positive, finite, ascending sigmas.
    - `model_type`: one of `MODEL_TYPES`; decides the noise scaling of `mode="model"`.
    - `parameterisation`: the sigma <-> timestep maps, one of `PARAMETERISATIONS`
      (`"discrete"`, `"continuous_edm"`, `"continuous_v"`, `"cosmos_rflow"`,
      `"discrete_flow"`, `"flux"`, `"stable_cascade"`).
    - `log_sigmas`: the table's logarithm as the model holds it (default `log(sigmas)`), the
      same shape as `sigmas`.
    - `shift`, `multiplier`, `sigma_data`: the sampling's numbers (positive), used by the maps
      that read them (flow shift and timestep multiplier; EDM's sigma_data).

    **Returns:** a `ModelSampling`.
    """
    fn = "model_sampling_from_table"
    check_choice(fn, "model_type", model_type, MODEL_TYPES)
    check_choice(fn, "parameterisation", parameterisation, PARAMETERISATIONS)
    table = np.asarray(sigmas, dtype=np.float32)
    if table.ndim != 1 or table.shape[0] < 2:
        raise ValueError(f"{fn}: sigmas must be 1-D with at least 2 entries, got shape {table.shape}")
    if not np.all(np.isfinite(table)) or not np.all(table > 0):
        raise ValueError(f"{fn}: sigmas must be positive and finite")
    if not np.all(np.diff(table) >= 0):
        raise ValueError(f"{fn}: sigmas must be ascending (least noise first)")
    logs = np.log(table) if log_sigmas is None else np.asarray(log_sigmas, np.float32)
    if logs.shape != table.shape or not np.all(np.isfinite(logs)):
        raise ValueError(
            f"{fn}: log_sigmas must be finite and of the table's shape {table.shape}, got shape {logs.shape}"
        )
    proto = ModelSampling(
        sigmas=jnp.asarray(table),
        log_sigmas=jnp.asarray(logs),
        shift=_zero(_positive(fn, "shift", shift)),
        multiplier=_zero(_positive(fn, "multiplier", multiplier)),
        sigma_data=_zero(_positive(fn, "sigma_data", sigma_data)),
        model_type=model_type,
        parameterisation=parameterisation,
    )
    return _finish(proto, table, logs)


SNR_OFFSET_PERCENT = 1e-4
"""ComfyUI's `offset_first_sigma_for_snr` percent: a flow model's first sigma of 1 (an infinite
log-SNR) becomes `percent_to_sigma(1e-4)` for the samplers that read the model sampling."""


def percent_to_sigma(ms: ModelSampling, percent: float) -> jax.Array:
    """The sigma at `percent` of the way through the model's schedule (ComfyUI's
    `model_sampling.percent_to_sigma`): the top sigma's stand-in at 0 (1 for rectified flow,
    else 999999999.9), 0 at 1; `percent` a static Python float."""
    flow = ms.parameterisation in ("discrete_flow", "flux")
    if percent <= 0.0:
        return jnp.float32(1.0 if flow else 999999999.9)
    if percent >= 1.0:
        return jnp.float32(0.0)
    t = jnp.float32(1.0 - percent)
    if ms.parameterisation == "discrete":
        return ms.sigma(jnp.float32((1.0 - percent) * 999.0))
    if ms.parameterisation == "discrete_flow":
        return _time_snr_shift(ms.shift, t)
    if ms.parameterisation == "flux":
        return _flux_sigma(ms, t)
    if ms.parameterisation == "stable_cascade":
        return ms.sigma(t)
    # The continuous models: log-linear between the table's ends.
    lo = jnp.log(ms.sigma_min)
    return jnp.exp((jnp.log(ms.sigma_max) - lo) * t + lo)


def snr_offset_sigma(ms: ModelSampling | None) -> jax.Array | None:
    """`ms.percent_to_sigma(SNR_OFFSET_PERCENT)` for the rectified-flow (CONST) parameterisations,
    as ComfyUI computes it; None for the others (their first sigma is never moved)."""
    if ms is None:
        return None
    t = jnp.float32(1.0 - SNR_OFFSET_PERCENT)
    if ms.parameterisation == "discrete_flow":
        return _time_snr_shift(ms.shift, t)
    if ms.parameterisation == "flux":
        return _flux_sigma(ms, t)
    return None
