"""Up-front checks of plain-Python settings, shared by the public functions.

Settings (names, step counts) are checked here, before anything is traced, so a bad
value fails with a message that names the function, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Sequence

MAX_STEPS = 10000
"""The largest step count or step bound the ComfyUI node accepts."""


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
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"{fn}: {what} must be an integer in [{lo}, {hi}], got {value!r}") from None
    if not lo <= as_int <= hi:
        raise ValueError(f"{fn}: {what} must be in [{lo}, {hi}], got {as_int}")
    return as_int


def check_steps(fn: str, steps: object) -> int:
    """A step count, 0 to `MAX_STEPS` as on the node."""
    return check_int(fn, "steps", steps, 0, MAX_STEPS)
