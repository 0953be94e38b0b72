"""Up-front checks of the node's inputs, with messages that name the input a ComfyUI user sets.

Everything here is plain Python and torch (no JAX), so a bad input is reported before JAX is
imported or any work is done. Each message starts with the node's id and the input's name
(`JaxUnsampler_BatchUnsampler: latent_image: ...`) and says what to connect or set instead.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from jax_unsampler._names import ITEM_ID_MAX, MAX_STEPS
from jax_unsampler._validation import check_int

from ._convert import latent_samples

_PREFIX = re.compile(r"^[A-Za-z_][\w.]*: ")


def check_window(fn: str, steps: object, start_at_step: object, end_at_step: object) -> tuple[int, int, int]:
    """`steps`, `start_at_step`, `end_at_step` in the node's ranges, selecting at least one step.

    The window is `[start_at_step, min(steps, end_at_step))`; an empty one would give an empty
    LATENT, which every node after this one fails on, so it is refused here.
    """
    steps = check_int(fn, "steps", steps, 0, MAX_STEPS)
    start = check_int(fn, "start_at_step", start_at_step, 0, MAX_STEPS)
    end = check_int(fn, "end_at_step", end_at_step, 1, MAX_STEPS)
    if steps == 0:
        raise ValueError(f"{fn}: steps is 0, so there is no step to noise; set steps to 1 or more")
    if start >= min(steps, end):
        raise ValueError(
            f"{fn}: start_at_step ({start}) must be below both steps ({steps}) and end_at_step ({end}): "
            "the node noises steps start_at_step to min(steps, end_at_step) - 1, and this selects none"
        )
    return steps, start, end


CFG_MAX = 100.0
"""The largest cfg the nodes accept (KSampler's range: 0 to 100)."""


def check_cfg(fn: str, cfg: object, hint: str = "") -> float:
    """`cfg` as a float: a real number (Python or NumPy) from 0 to `CFG_MAX`, as KSampler's range."""
    ok = isinstance(cfg, numbers.Real) and not isinstance(cfg, bool)
    if not ok or not math.isfinite(float(cfg)) or not 0.0 <= float(cfg) <= CFG_MAX:  # type: ignore[arg-type]
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{fn}: cfg must be a finite number from 0 to {CFG_MAX:g}{extra}, got {cfg!r}")
    return float(cfg)  # type: ignore[arg-type]


def check_finite(fn: str, name: str, samples: torch.Tensor) -> None:
    """Refuses a LATENT holding NaN or infinite values (before any model runs on it)."""
    if not bool(torch.isfinite(samples).all()):
        bad = int((~torch.isfinite(samples)).sum())
        raise ValueError(
            f"{fn}: {name}: the LATENT holds {bad} NaN or infinite value{'s' if bad != 1 else ''}; "
            "connect a finite latent"
        )


def check_latent_image(fn: str, latent_image: object, name: str = "latent_image") -> torch.Tensor:
    """The LATENT's `samples`, with its `noise_mask` and `batch_index` checked; returns `samples`.
    `name`: the node's input, for the messages."""
    where = f"{fn}: {name}"
    samples = latent_samples(latent_image, fn=where)  # type: ignore[arg-type]
    if samples.shape[0] == 0:
        raise ValueError(
            f"{where}: the LATENT holds no latents (batch size 0); connect one with at least one"
        )
    if 0 in samples.shape:
        raise ValueError(
            f"{where}: the LATENT's samples have an empty axis (shape {tuple(samples.shape)}); "
            "connect a LATENT of a real image, video or audio"
        )
    assert isinstance(latent_image, Mapping)
    _check_noise_mask(where, latent_image.get("noise_mask"), samples)
    _check_batch_index(where, latent_image.get("batch_index"), samples.shape[0])
    return samples


def _check_noise_mask(where: str, mask: object, samples: torch.Tensor) -> None:
    if mask is None:
        return
    expected = "a mask tensor of shape (H, W), (B, H, W) or (B, 1, H, W), as SetLatentNoiseMask makes it"
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{where}: noise_mask must be {expected}, got {type(mask).__name__}")
    if not 2 <= mask.ndim <= samples.ndim or 0 in mask.shape:
        raise ValueError(f"{where}: noise_mask must be {expected}, got shape {tuple(mask.shape)}")
    if not (mask.dtype.is_floating_point or mask.dtype == torch.bool):
        raise ValueError(f"{where}: noise_mask must hold float (0 to 1) or bool values, got {mask.dtype}")


def _check_batch_index(where: str, index: object, batch: int) -> None:
    if index is None:
        return
    expected = f"a list of {batch} integers from 0 to {ITEM_ID_MAX} (one per latent, as batch nodes make it)"
    if isinstance(index, torch.Tensor):
        index = index.tolist() if index.ndim == 1 else index
    if isinstance(index, (str, bytes)) or not isinstance(index, Sequence):
        raise ValueError(f"{where}: batch_index must be {expected}, got {type(index).__name__} {index!r}")
    if len(index) != batch:
        raise ValueError(
            f"{where}: batch_index must be {expected}, got {len(index)} entries: {list(index)!r}"
        )
    for entry in index:
        try:
            if isinstance(entry, (bool, float)):
                raise TypeError
            value = operator.index(entry)
        except TypeError:
            raise ValueError(f"{where}: batch_index must be {expected}, got the entry {entry!r}") from None
        if not 0 <= value <= ITEM_ID_MAX:
            raise ValueError(f"{where}: batch_index must be {expected}, got the entry {value}")


def node_message(fn: str, error: BaseException, what: str | None = None) -> str:
    """An error from inside the computation as the node's: its internal function name replaced by
    the node's id (and the input it concerns, `what`, where known)."""
    message = " ".join(str(error).split())
    if message.startswith(f"{fn}:"):
        return message
    message = _PREFIX.sub("", message, count=1)
    return f"{fn}: {what}: {message}" if what else f"{fn}: {message}"


def batch_index_ids(latent_image: Mapping[str, Any]) -> list[int] | None:
    """The checked LATENT `batch_index` as plain ints, or None when it has none."""
    index = latent_image.get("batch_index")
    if index is None:
        return None
    if isinstance(index, torch.Tensor):
        index = index.tolist()
    return [operator.index(i) for i in index]
