"""ComfyUI's nine schedulers: a model sampling and a step count in, a descending sigma list out.

Everything the step count decides (the schedule's length, which table entries it reads, the
fractions of a linspace) is computed on the host in NumPy and handed to one jitted program per
scheduler and length bucket (`bucket`); every sigma value is computed by that program, from the
model sampling, which may be traced. A new step count compiles nothing unless it is the first
in its bucket.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _float32
from ._model_sampling import ModelSampling
from ._names import MAX_STEPS, SCHEDULERS
from ._validation import check_choice, check_int

BUCKET_MIN: int = 256
"""The shortest padded schedule: every step count up to 254 shares one program per scheduler."""


def bucket(length: int) -> int:
    """The padded length a schedule of `length` sigmas is computed at: a power of two, at least
    `BUCKET_MIN`. A new step count costs a new program only when it crosses a power of two."""
    return max(BUCKET_MIN, 1 << max(length - 1, 0).bit_length())


# Each schedule is computed at its bucket's length by one jitted program per (scheduler, bucket),
# from host arrays that hold everything the step count decides: which table entries, which
# entries are real (`valid`), and the parts of a torch-style linspace. Entries past the real
# length are garbage, cut off by the caller.


class _Linspace(NamedTuple):
    """`torch.linspace(start, stop, num)` padded to `size`, all but `start` and `stop`."""

    recip: np.ndarray  # float32 1 / (num - 1): XLA multiplied by it when num was a constant
    up: np.ndarray  # float32 i, for the first half (filled forwards from start)
    down: np.ndarray  # float32 num - 1 - i, for the second half (filled backwards from stop)
    first_half: np.ndarray  # bool i < num // 2


def _linspace_parts(num: int, size: int) -> _Linspace:
    i = np.arange(size)
    recip = np.float32(1) / np.float32(max(num - 1, 1))
    # One point is `start` (the forward half), as in torch.
    return _Linspace(recip, i.astype(np.float32), (num - 1 - i).astype(np.float32), i < max(num // 2, 1))


def _linspace(start, stop, parts: _Linspace) -> jax.Array:
    """Torch's CPU linspace: the first half forwards from `start`, the rest backwards from `stop`."""
    start, stop = jnp.asarray(start, jnp.float32), jnp.asarray(stop, jnp.float32)
    step = (stop - start) * parts.recip
    return jnp.where(parts.first_half, start + step * parts.up, stop - step * parts.down)


def _host_ramp(n: int, size: int) -> np.ndarray:
    """`torch_linspace(0, 1, n)` in float32 NumPy, as XLA folded it when it was a constant."""
    i = np.arange(size)
    step = np.float32(1) / np.float32(max(n - 1, 1))
    up = np.float32(0) + step * i.astype(np.float32)
    down = np.float32(1) - step * (n - 1 - i).astype(np.float32)
    return np.where((i < n // 2) | (n == 1), up, down).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _beta_indices(n: int, size: int, a: float, b: float) -> tuple[int, ...]:
    # Float64 SciPy, as ComfyUI does it, so the rounded indices agree exactly.
    u = 1 - np.linspace(0, 1, n, endpoint=False)
    import scipy.stats  # here, not at the top: importing it costs 0.8 s, and only "beta" needs it

    t = np.rint(scipy.stats.beta.ppf(u, a, b) * (size - 1))
    keep = [int(v) for i, v in enumerate(t) if i == 0 or v != t[i - 1]]
    return tuple(keep)


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


def _pad(values: np.ndarray, size: int, fill=0) -> np.ndarray:
    return np.concatenate([values, np.full(size - len(values), fill, values.dtype)])


class _Inputs(NamedTuple):
    """The host half of one schedule: its length, its program and that program's array inputs."""

    length: int
    kind: str  # the program: "table" (entries of the sigma table) or a scheduler name
    valid: np.ndarray  # bool: a real entry (not the appended 0, not padding)
    a: Any
    b: Any


def _inputs(table_size: int, scheduler: str, n: int, second_is_zero: bool) -> _Inputs:
    """Everything the step count decides, as host arrays of the bucket's length."""
    if scheduler == "ddim_uniform":
        stride = max(table_size // (n + 1 if second_is_zero else n), 1)
        picked = np.arange(1, table_size, stride)[::-1]
        return _table_inputs(picked, append_zero=not second_is_zero)
    if scheduler == "simple":
        every = table_size / n
        return _table_inputs(np.array([table_size - 1 - int(x * every) for x in range(n)]), append_zero=True)
    if scheduler == "beta":
        return _table_inputs(np.array(_beta_indices(n, table_size, 0.6, 0.6)), append_zero=True)
    if scheduler == "kl_optimal" and n == 1:  # ComfyUI divides 0 by 0 here and returns [nan, 0]
        return _table_inputs(np.array([table_size - 1]), append_zero=True)
    size = bucket(n + 1)
    valid = np.arange(size) < n
    if scheduler == "linear_quadratic":
        fractions = (1.0 - _linear_quadratic_fractions(n)).astype(np.float32)
        return _Inputs(n + 1, scheduler, valid, _pad(fractions, size), None)
    if scheduler == "karras":
        return _Inputs(n + 1, scheduler, valid, _host_ramp(n, size), None)
    if scheduler == "kl_optimal":
        a = np.arange(size).astype(np.float32) / np.float32(n - 1)  # exact 1 at the end
        return _Inputs(n + 1, scheduler, valid, a, (np.float32(1) - a).astype(np.float32))
    if scheduler == "sgm_uniform":
        return _Inputs(n + 1, scheduler, valid, _linspace_parts(n + 1, size), None)
    if scheduler == "exponential":
        return _Inputs(n + 1, scheduler, valid, _linspace_parts(n, size), None)
    # normal: n points and a 0, or n + 1 points when the model's last sigma is ~0.
    return _Inputs(n + 1, scheduler, valid, _linspace_parts(n, size), _linspace_parts(n + 1, size))


def _table_inputs(indices: np.ndarray, append_zero: bool) -> _Inputs:
    length = len(indices) + append_zero
    size = bucket(length)
    valid = np.arange(size) < len(indices)
    return _Inputs(length, "table", valid, _pad(indices.astype(np.int32), size), None)


@functools.partial(jax.jit, static_argnames=("kind",))
def _calculate_sigmas(ms: ModelSampling, valid, a, b, *, kind: str) -> jax.Array:
    """A schedule padded to its bucket (see `_inputs`): one program per scheduler and bucket."""
    zero = jnp.zeros((), jnp.float32)
    if kind == "table":
        return jnp.where(valid, ms.sigmas[a], zero).astype(jnp.float32)
    if kind == "linear_quadratic":
        return a * ms.sigma_max
    if kind == "karras":  # Karras et al. (2022): uniform in sigma ** (1 / rho)
        rho = 7.0
        lo, hi = ms.sigma_min ** (1 / rho), ms.sigma_max ** (1 / rho)
        return jnp.where(valid, (hi + a * (lo - hi)) ** rho, zero)
    if kind == "kl_optimal":  # Sabour et al. (2024): uniform in atan(sigma)
        lo, hi = _float32.arctan(ms.sigma_min), _float32.arctan(ms.sigma_max)
        return jnp.where(valid, jnp.tan(a * lo + b * hi), zero)
    if kind == "sgm_uniform":  # uniform in the model's timestep, end point excluded
        t = _linspace(ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min), a)
        return jnp.where(valid, ms.sigma(t), zero)
    if kind == "exponential":  # uniform in log(sigma)
        return jnp.where(valid, jnp.exp(_linspace(jnp.log(ms.sigma_max), jnp.log(ms.sigma_min), a)), zero)
    # normal: uniform in the model's timestep; one more point instead of a 0 if the last sigma is ~0
    t0, t1 = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    with_zero = jnp.where(valid, ms.sigma(_linspace(t0, t1, a)), zero)
    without_zero = ms.sigma(_linspace(t0, t1, b))
    return jnp.where(jnp.abs(ms.sigma(t1)) <= 1e-5, without_zero, with_zero).astype(jnp.float32)


def on_host(padded: jax.Array, finish: Callable[[Any], Any]) -> jax.Array:
    """`finish(padded)` (slicing, reordering: no arithmetic) in NumPy where `padded` is concrete,
    so that a new length compiles no program; with `jnp` ops where it is traced."""
    if isinstance(padded, jax.core.Tracer):
        return finish(padded)
    # device_put: jnp.asarray would compile a program per shape.
    return jax.device_put(np.ascontiguousarray(finish(np.asarray(padded))))


def padded_sigmas(ms: ModelSampling, scheduler: str, steps: int) -> tuple[jax.Array, int]:
    """The checked arguments' schedule, padded to its bucket, and its real length."""
    if steps == 0:
        return jnp.zeros((BUCKET_MIN,), jnp.float32), 1
    second_is_zero = _second_is_zero(ms) if scheduler == "ddim_uniform" else False
    inputs = _inputs(ms.sigmas.shape[0], scheduler, steps, second_is_zero)
    return _calculate_sigmas(ms, inputs.valid, inputs.a, inputs.b, kind=inputs.kind), inputs.length


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
    padded, length = padded_sigmas(ms, scheduler, steps)
    return on_host(padded, lambda v: v[:length])
