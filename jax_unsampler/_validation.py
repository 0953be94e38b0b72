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
