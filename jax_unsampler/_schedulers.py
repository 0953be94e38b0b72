"""ComfyUI's nine schedulers: a model sampling and a step count in, a descending sigma list out.

Each schedule is a short pure function of `(ms, n)`. Everything that decides a schedule's
*length* or which table entries it reads depends only on `n` and the table's length, so it is
plain Python/NumPy at trace time; every sigma value is traced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from . import _float32
from ._float32 import torch_linspace
from ._model_sampling import ModelSampling
from ._names import MAX_STEPS, SCHEDULERS
from ._validation import check_choice, check_int


def _append_zero(x):
    return jnp.concatenate([x, jnp.zeros((1,), x.dtype)])


def simple(ms: ModelSampling, n: int):
    """Every `len(table) / n`-th table entry, from the top."""
    size = ms.sigmas.shape[0]
    stride = size / n
    idx = np.array([size - 1 - int(x * stride) for x in range(n)], dtype=np.int32)
    return _append_zero(ms.sigmas[idx])


def sgm_uniform(ms: ModelSampling, n: int):
    """Uniform in the model's timestep, end point excluded."""
    t = torch_linspace(ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min), n + 1)[:-1]
    return _append_zero(ms.sigma(t))


def karras(ms: ModelSampling, n: int, rho: float = 7.0):
    """Karras et al. (2022): uniform in `sigma ** (1 / rho)`."""
    ramp = torch_linspace(0.0, 1.0, n)
    lo, hi = ms.sigma_min ** (1 / rho), ms.sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(ms: ModelSampling, n: int):
    """Uniform in `log(sigma)`."""
    return _append_zero(jnp.exp(torch_linspace(jnp.log(ms.sigma_max), jnp.log(ms.sigma_min), n)))


def ddim_uniform(ms: ModelSampling, n: int, second_is_zero: bool):
    """Every `len(table) // n`-th table entry from index 1 up, reversed (length varies)."""
    size = ms.sigmas.shape[0]
    stride = max(size // (n + 1 if second_is_zero else n), 1)
    picked = ms.sigmas[np.arange(1, size, stride)]
    if not second_is_zero:
        picked = jnp.concatenate([jnp.zeros((1,), picked.dtype), picked])
    return picked[::-1]


@functools.lru_cache(maxsize=256)
def _beta_indices(n: int, size: int, a: float, b: float) -> tuple[int, ...]:
    # Float64 SciPy, as ComfyUI does it, so the rounded indices agree exactly.
    u = 1 - np.linspace(0, 1, n, endpoint=False)
    t = np.rint(scipy.stats.beta.ppf(u, a, b) * (size - 1))
    keep = [int(v) for i, v in enumerate(t) if i == 0 or v != t[i - 1]]
    return tuple(keep)


def beta(ms: ModelSampling, n: int, a: float = 0.6, b: float = 0.6):
    """Table entries at Beta(a, b) quantiles (Lee et al., 2024); repeated indices are dropped."""
    idx = np.array(_beta_indices(n, ms.sigmas.shape[0], a, b), dtype=np.int32)
    return _append_zero(ms.sigmas[idx])


def normal(ms: ModelSampling, n: int):
    """Uniform in the model's timestep; one more point instead of a 0 if the last sigma is ~0."""
    t0, t1 = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    with_zero = _append_zero(ms.sigma(torch_linspace(t0, t1, n)))
    without_zero = ms.sigma(torch_linspace(t0, t1, n + 1))
    return jnp.where(jnp.abs(ms.sigma(t1)) <= 1e-5, without_zero, with_zero)


def _linear_quadratic_fractions(n: int, threshold: float = 0.025) -> np.ndarray:
    if n == 1:
        return np.array([0.0, 1.0])
    lin = n // 2
    values = [i * threshold / lin for i in range(lin)]
    gap = lin - threshold * n
    quad = n - lin
    q = gap / (lin * quad**2)
    slope = threshold / lin - 2 * gap / quad**2
    const = q * lin**2
    values += [q * i**2 + slope * i + const for i in range(lin, n)]
    return np.array(values + [1.0])


def linear_quadratic(ms: ModelSampling, n: int):
    """Linear for the first half of the steps, then a joining quadratic (Mochi's schedule)."""
    fractions = (1.0 - _linear_quadratic_fractions(n)).astype(np.float32)
    return jnp.asarray(fractions) * ms.sigma_max


def kl_optimal(ms: ModelSampling, n: int):
    """Uniform in `atan(sigma)` (Sabour et al., 2024); one step gives `[sigma_max, 0]`."""
    if n == 1:  # ComfyUI divides 0 by 0 here and returns [nan, 0]
        return _append_zero(ms.sigma_max[None])
    a = jnp.arange(n, dtype=jnp.float32) / (n - 1)
    lo, hi = _float32.arctan(ms.sigma_min), _float32.arctan(ms.sigma_max)
    return _append_zero(jnp.tan(a * lo + (1 - a) * hi))


_SCHEDULE_FNS = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}


@functools.partial(jax.jit, static_argnames=("scheduler", "steps", "second_is_zero"))
def _calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int, second_is_zero: bool):
    if steps == 0:
        return jnp.zeros((1,), jnp.float32)
    if scheduler == "ddim_uniform":
        return ddim_uniform(ms, steps, second_is_zero)
    return _SCHEDULE_FNS[scheduler](ms, steps).astype(jnp.float32)


def _second_is_zero(ms: ModelSampling) -> bool:
    second = ms.sigmas[1] if ms.sigmas.shape[0] > 1 else None
    if second is None:
        return False
    if isinstance(second, jax.core.Tracer):
        return ms.second_sigma_is_zero
    return abs(float(second)) <= 1e-5


def check_model_sampling(fn: str, ms: object) -> ModelSampling:
    if not isinstance(ms, ModelSampling):
        raise ValueError(
            f"{fn}: expected a ModelSampling (from model_sampling() or preset(name).model_sampling), "
            f"got {type(ms).__name__}"
        )
    return ms


def calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int, *, _max_steps: int = MAX_STEPS):
    """ComfyUI's `calculate_sigmas`: a scheduler's descending sigmas for `steps` steps.

    **Arguments:**

    - `ms`: the model sampling (`model_sampling(...)`, `preset(name).model_sampling`).
    - `scheduler`: one of `SCHEDULERS`.
    - `steps`: 0 to 10000. Zero steps gives `[0.0]`.

    **Returns:** a float32 array, usually of length `steps + 1` and ending in 0; `ddim_uniform`
    and `beta` can give other lengths, exactly as ComfyUI does.

    Differs from ComfyUI in one place: `kl_optimal` with one step returns `[sigma_max, 0]`
    where ComfyUI divides 0 by 0 and returns `[nan, 0]`.
    """
    fn = "calculate_sigmas"
    check_model_sampling(fn, ms)
    check_choice(fn, "scheduler", scheduler, SCHEDULERS)
    steps = check_int(fn, "steps", steps, 0, _max_steps)
    second_is_zero = _second_is_zero(ms) if scheduler == "ddim_uniform" else False
    return _calculate_sigmas(ms, scheduler, steps, second_is_zero)
