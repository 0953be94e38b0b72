"""Up-front checks of plain-Python settings, shared by the public functions.

Settings (names, step counts) are checked here, before anything is traced, so a bad
value fails with a message that names the function, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from ._names import MAX_STEPS


def check_choice(fn: str, what: str, value: object, choices: Sequence[str]) -> str:
    """Return `value` if it is one of `choices`, else raise a `ValueError` listing them."""
    if isinstance(value, str) and value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, choices, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    raise ValueError(f"{fn}: unknown {what} {value!r}{hint}; valid choices: {', '.join(choices)}")


def check_int(fn: str, what: str, value: object, lo: int, hi: int) -> int:
    """Return `value` as an int if it is an integer in `[lo, hi]`, else raise `ValueError`."""
    if isinstance(value, bool):
        raise ValueError(f"{fn}: {what} must be an integer in [{lo}, {hi}], got {value!r}")
    try:
        as_int = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{fn}: {what} must be an integer in [{lo}, {hi}], got {value!r}") from None
    if not lo <= as_int <= hi:
        raise ValueError(f"{fn}: {what} must be an integer in [{lo}, {hi}], got {as_int}")
    return as_int


def check_positive_scalar(fn: str, what: str, value: object) -> float | None:
    """A positive finite number from a Python, NumPy or concrete 0-d JAX scalar, as a float.

    Returns None for a traced value (it cannot be checked; the caller keeps it as it is).
    Anything else, including 0, negatives, NaN, infinities and booleans, raises `ValueError`.
    """
    jax = sys.modules.get("jax")  # this module stays JAX-free: a tracer exists only if JAX is loaded
    if jax is not None and isinstance(value, jax.core.Tracer):
        return None
    number = None
    if not isinstance(value, (bool, np.bool_, str, bytes)):
        try:
            array = np.asarray(value)
        except Exception:  # not an array-like: reported below
            array = None
        if array is not None and array.shape == () and array.dtype.kind in "fiu":
            number = float(array)
    if number is None or not (math.isfinite(number) and number > 0):
        raise ValueError(f"{fn}: {what} must be a positive finite number (e.g. 0.18215), got {value!r}")
    return number


def check_steps(fn: str, steps: object) -> int:
    """A step count, 0 to `MAX_STEPS` as on the node."""
    return check_int(fn, "steps", steps, 0, MAX_STEPS)


F = TypeVar("F", bound=Callable[..., Any])


def renamed_argument(old: str, new: str, since: str) -> Callable[[F], F]:
    """Accept `old=` as a deprecated spelling of the keyword argument `new=` (one warning a call)."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{func.__name__}: pass {new}= only (got both {old}= and {new}=)")
                warnings.warn(
                    f"{func.__name__}: the argument {old}= is now {new}= (renamed in {since})",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap


# --- arrays: the one contract of every entry point ---------------------------------------------
#
# Each rule is written once here and used by `noised_latents`, `sample`, `iterative_mixing_sample`,
# `inverted_latents` and the torch functions alike, with one wording. A value is checked before
# it is converted: a Python list or a NumPy array is always concrete (converting it inside a
# caller's `jax.jit` would make it a tracer and skip the check); a `jax.Array` is concrete unless
# it is a tracer. Traced values are checked for shape and dtype only.


def is_concrete(value: object) -> bool:
    """Whether `value` holds numbers now (not a tracer of a caller's `jax.jit` / `grad` / `vmap`)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return True
    if isinstance(value, jax.core.Tracer):
        return False
    if isinstance(value, (list, tuple)):
        return all(is_concrete(v) for v in value)
    return True


def host_values(value: object) -> np.ndarray:
    """A concrete value as a NumPy array, read now even while a caller's `jax.jit` traces."""
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(value, jax.Array):
        with jax.ensure_compile_time_eval():
            return np.asarray(value)
    return np.asarray(value)


def _is_floating(value: object) -> bool:
    """Whether an array-like holds real floating numbers (bfloat16 included; Python floats too)."""
    import jax.numpy as jnp

    dtype = getattr(value, "dtype", None)
    if dtype is None:
        dtype = np.asarray(value).dtype
    try:
        return bool(jnp.issubdtype(dtype, jnp.floating))
    except TypeError:
        return False


def all_finite(values: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Whether every value is finite, read in chunks: no copy of a large batch (the flat view of
    a CPU array shares its memory), at most `chunk` elements converted at a time."""
    flat = values.reshape(-1)
    return all(
        bool(np.isfinite(flat[i : i + chunk].astype(np.float32, copy=False)).all())
        for i in range(0, flat.size, chunk)
    )


def check_latent(fn: str, value: object, *, what: str = "latent", min_rank: int = 2) -> Any:
    """A floating `(B, ...)` array of rank >= `min_rank`, finite where concrete, as a `jax.Array`
    in its own dtype (callers compute in float32 and return this dtype)."""
    import jax.numpy as jnp

    if value is None:
        raise ValueError(
            f"{fn}: {what} is required: pass a (B, C, ...) array, e.g. jnp.zeros((1, 4, 64, 64))"
        )
    shape = getattr(value, "shape", None)
    if shape is None:
        try:
            host = np.asarray(value)
        except (TypeError, ValueError):
            host = np.asarray(None)
        if host.dtype == object:
            raise ValueError(f"{fn}: {what} must be an array, got {type(value).__name__}")
        value, shape = host, host.shape
    if len(shape) < min_rank:
        raise ValueError(
            f"{fn}: {what} must have a batch axis and at least {min_rank - 1} more (rank >= {min_rank}), "
            f"got shape {tuple(shape)}"
        )
    if not _is_floating(value):
        raise ValueError(
            f"{fn}: {what} must be floating point (float32, float16 or bfloat16), "
            f"got {getattr(value, 'dtype', type(value).__name__)}"
        )
    if is_concrete(value) and not all_finite(host_values(value)):
        raise ValueError(f"{fn}: {what} contains NaN or infinite values")
    return value if isinstance(value, sys.modules["jax"].Array) else jnp.asarray(value)


def check_sigmas(fn: str, value: object, *, order: str | None = None, min_len: int = 0) -> Any:
    """1-D floating sigmas (Python numbers are taken as float32; integer arrays are refused),
    finite and >= 0 where concrete, in `order` ("descending": noisiest first, as KSampler gives
    them; "ascending": least noise first, as the node gives them; equal neighbours allowed),
    at least `min_len` entries. Returns a float32 `jax.Array`."""
    import jax.numpy as jnp

    if getattr(value, "dtype", None) is None:
        try:
            host = np.asarray(value, np.float32)
        except (TypeError, ValueError):
            raise ValueError(
                f"{fn}: sigmas must be a 1-D array of numbers, got {type(value).__name__}"
            ) from None
        value = host
    shape = tuple(value.shape)  # type: ignore[attr-defined]
    if len(shape) != 1:
        raise ValueError(f"{fn}: sigmas must be 1-D, got shape {shape}")
    if not _is_floating(value):
        raise ValueError(f"{fn}: sigmas must be floating point, got {value.dtype}")  # type: ignore[attr-defined]
    if shape[0] < min_len:
        raise ValueError(
            f"{fn}: sigmas must be 1-D with at least {min_len} entries ({min_len - 1} step(s)), "
            f"got {shape[0]}"
        )
    if is_concrete(value):
        v = host_values(value).astype(np.float32)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{fn}: sigmas contain NaN or infinite values")
        if v.size and v.min() < 0:
            raise ValueError(f"{fn}: sigmas must be non-negative, got {v.min()} at index {int(v.argmin())}")
        wrong = np.diff(v) > 0 if order == "descending" else np.diff(v) < 0 if order == "ascending" else None
        if wrong is not None and wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            hint = (
                "noisiest first, as KSampler gives them; flip the node's ascending sigmas first"
                if order == "descending"
                else "least noise first, as the node gives them; flip descending sigmas first"
            )
            raise ValueError(
                f"{fn}: sigmas must be {order} ({hint}), got {v[i]} then {v[i + 1]} at index {i + 1}"
            )
    return jnp.asarray(value, jnp.float32)


def check_denoiser(fn: str, denoiser: object) -> None:
    if not callable(denoiser):
        raise TypeError(
            f"{fn}: denoiser must be callable as denoiser(x, sigma) -> denoised x, "
            f"got {type(denoiser).__name__}"
        )


def check_latent_format(fn: str, latent_format: object) -> None:
    from ._latent_format import LatentFormat

    if latent_format is not None and not isinstance(latent_format, LatentFormat):
        raise ValueError(
            f"{fn}: latent_format must be a LatentFormat (e.g. preset(name).latent_format) or None, "
            f"got {type(latent_format).__name__}"
        )


def check_flag(fn: str, what: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{fn}: {what} must be True or False, got {value!r}")
    return bool(value)


def check_finite(fn: str, what: str, value: object, lo: float | None = None, hi: float | None = None) -> None:
    """A real scalar setting, finite (and in [lo, hi]) where concrete; traced values pass."""
    if not is_concrete(value):
        return
    try:
        host = np.asarray(host_values(value))
    except (TypeError, ValueError):
        host = np.asarray(None)
    if host.shape != () or host.dtype.kind not in "fiu" or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{fn}: {what} must be a real number, got {value!r}")
    number = float(host)
    bounds = (
        f" in [{lo}, {hi}]" if lo is not None and hi is not None else f" >= {lo}" if lo is not None else ""
    )
    if not math.isfinite(number) or (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValueError(f"{fn}: {what} must be a finite number{bounds}, got {value!r}")


def check_normalize_on_mean(fn: str, shape: tuple[int, ...]) -> None:
    """`normalize_on_mean` takes each item's and channel's mean and unbiased std over the axes
    after the channel axis: refuse a latent with no such axes, or with fewer than 2 values there
    (the unbiased std of one value is NaN)."""
    if len(shape) < 3:
        raise ValueError(
            f"{fn}: normalize_on_mean matches per-channel statistics over the axes after the channel "
            f"axis; the latent needs at least 3 dimensions, got shape {tuple(shape)}"
        )
    if math.prod(shape[2:]) < 2 and math.prod(shape) > 0:
        raise ValueError(
            f"{fn}: normalize_on_mean needs at least 2 values per item and channel (an unbiased "
            f"std over the axes after the channel axis), got a latent of shape {tuple(shape)}"
        )


SPATIAL_AXES = {1: "L", 2: "H, W", 3: "T, H, W"}
"""How a latent's axes after the channel axis are written, by their number."""


def check_latent_fits(
    fn: str, shape: tuple[int, ...], model: str, channels: int, dimensions: int | None = None
) -> None:
    """The one rule of a latent and the model it is given with: `channels` on axis 1 and, where
    the model's `dimensions` (spatial axes) are known, `dimensions + 2` axes. `model` names the
    model as the caller's user knows it (`--model sd15`, `the model (SD15)`)."""
    rank = None if dimensions is None else dimensions + 2
    if len(shape) >= 2 and shape[1] == channels and (rank is None or len(shape) == rank):
        return
    axes = "..." if dimensions is None else SPATIAL_AXES.get(dimensions, "...")
    raise ValueError(
        f"{fn}: a latent of shape {tuple(shape)} does not fit {model}, whose latents are "
        f"(B, {channels}, {axes}); pick the model the latent is from"
    )
