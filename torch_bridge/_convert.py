"""Tensors and LATENT dicts between torch and JAX.

Arrays cross through DLPack, which shares the buffer instead of copying it wherever both
frameworks can address the memory; everything else (non-contiguous views, devices the other
framework cannot see) is copied once. JAX is imported on first use, not at import time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def to_jax(tensor: torch.Tensor):
    """A JAX array with the values and dtype of a torch tensor.

    Shares the tensor's memory (DLPack) when it is contiguous and on a device JAX can use;
    otherwise copies it (a non-contiguous view is made contiguous first; a tensor on a device
    JAX does not have, such as CUDA with a CPU-only JAX, goes through the CPU). A shared
    buffer stays shared: do not write to the tensor while the array is in use.

    **Arguments:**

    - `tensor`: any torch tensor; float32, float16 and bfloat16 keep their dtype (float64 and
      int64 become 32-bit unless JAX's x64 mode is on). Gradients are detached.

    **Returns:** a `jax.Array` of the same shape.
    """
    import jax

    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"to_jax: expected a torch.Tensor, got {type(tensor).__name__}")
    t = tensor.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    try:
        return jax.dlpack.from_dlpack(t)
    except Exception:  # a device or layout JAX cannot import: copy through the CPU
        if t.device.type == "cpu":
            raise
        return jax.dlpack.from_dlpack(t.cpu())


def to_torch(array, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch tensor with the values and dtype of a JAX (or NumPy) array.

    Shares the array's memory through DLPack where torch can address it (a JAX array on the
    CPU, or on a GPU torch also sees); copies otherwise. JAX arrays are immutable, so treat a
    shared result as read-only or `.clone()` it before writing in place.

    **Arguments:**

    - `array`: a `jax.Array` or NumPy array (bfloat16 included).
    - `device`: optional device to move the result to (a copy when it differs).

    **Returns:** a `torch.Tensor` of the same shape and dtype.
    """
    try:
        out = torch.from_dlpack(array)
    except Exception:
        out = _copy_to_torch(array)
    if device is not None and out.device != torch.device(device):
        out = out.to(device)
    return out


def _copy_to_torch(array) -> torch.Tensor:
    import numpy as np

    host = np.asarray(array)
    if host.dtype.name == "bfloat16":  # NumPy has no bfloat16 of its own: move the bits
        bits = torch.from_numpy(np.ascontiguousarray(host).view(np.int16).copy())
        return bits.view(torch.bfloat16)
    return torch.from_numpy(np.array(host, copy=True))


def latent_samples(latent: Mapping[str, Any], *, fn: str = "latent_samples") -> torch.Tensor:
    """The `samples` tensor of a ComfyUI LATENT dict, checked.

    **Arguments:**

    - `latent`: a LATENT dict (`{"samples": tensor, ...}`).
    - `fn`: the name to put in error messages.

    **Returns:** the tensor (not copied). Raises `ValueError` when the dict has no `samples`,
    or they are not a floating-point tensor with a batch axis.
    """
    if not isinstance(latent, Mapping):
        raise ValueError(f"{fn}: expected a LATENT dict with a 'samples' tensor, got {type(latent).__name__}")
    if "samples" not in latent:
        keys = ", ".join(map(repr, latent)) or "none"
        raise ValueError(f"{fn}: the LATENT has no 'samples' tensor (its keys: {keys})")
    samples = latent["samples"]
    if not isinstance(samples, torch.Tensor):
        raise ValueError(f"{fn}: LATENT 'samples' must be a torch.Tensor, got {type(samples).__name__}")
    if samples.ndim < 2:
        raise ValueError(
            f"{fn}: LATENT 'samples' must have a batch axis and at least one more, "
            f"got shape {tuple(samples.shape)}"
        )
    if samples.dtype not in _FLOATS:
        raise ValueError(f"{fn}: LATENT 'samples' must be float32, float16 or bfloat16, got {samples.dtype}")
    return samples


def latent_to_jax(latent: Mapping[str, Any]):
    """The `samples` of a LATENT dict as a JAX array (`to_jax`, so shared where possible).

    **Arguments:**

    - `latent`: a ComfyUI LATENT dict whose `samples` is a `(B, C, ...)` torch tensor.

    **Returns:** a JAX array of the same shape and dtype.
    """
    return to_jax(latent_samples(latent, fn="latent_to_jax"))


def _to_batch(masks: torch.Tensor, batch: int) -> torch.Tensor:
    """`masks` cut or cycled to `batch` entries (how ComfyUI matches a mask batch to a latent)."""
    if masks.shape[0] > batch:
        return masks[:batch]
    if masks.shape[0] < batch:
        reps = math.ceil(batch / masks.shape[0])
        return masks.repeat((reps,) + (1,) * (masks.ndim - 1))[:batch]
    return masks


def latent_with_samples(latent: Mapping[str, Any], samples) -> dict[str, Any]:
    """A new LATENT dict: `latent` with its `samples` replaced by a batch `k` times as large.

    Made the way ComfyUI's own nodes make one: the dict is copied (the input is left as it
    was), `samples` is replaced, every key it does not know (`type`, and any other) passes
    through untouched, and the per-item entries follow the new batch as `RepeatLatentBatch`
    expands them for `k` repeats:

    - `noise_mask` with more than one mask: matched to the old batch size (cut or cycled, as
      ComfyUI's samplers match masks), then repeated `k` times; a single mask stays as it is.
    - `batch_index` (a list of ints): each repeat `r` adds `r * (max - min + 1)`, so every
      entry keeps a distinct noise index.

    **Arguments:**

    - `latent`: the original LATENT dict (it must hold `samples`).
    - `samples`: the new batch, a torch tensor or a JAX array (converted with `to_torch` and
      moved to the original samples' device); its batch size must be a multiple of the
      original's (`0` included: an empty result).

    **Returns:** the new dict.
    """
    fn = "latent_with_samples"
    old = latent_samples(latent, fn=fn)
    new = samples if isinstance(samples, torch.Tensor) else to_torch(samples)
    if new.device != old.device:
        new = new.to(old.device)
    batch = old.shape[0]
    if new.ndim != old.ndim or tuple(new.shape[1:]) != tuple(old.shape[1:]):
        raise ValueError(
            f"{fn}: new samples of shape {tuple(new.shape)} do not match the LATENT's items "
            f"of shape {tuple(old.shape[1:])}"
        )
    if batch == 0 or new.shape[0] % batch:
        raise ValueError(
            f"{fn}: the new batch size {new.shape[0]} is not a multiple of the LATENT's batch size {batch}"
        )
    repeats = new.shape[0] // batch
    out = dict(latent)
    out["samples"] = new
    masks = latent.get("noise_mask")
    if isinstance(masks, torch.Tensor) and masks.ndim >= 1 and masks.shape[0] > 1:
        masks = _to_batch(masks, batch)
        out["noise_mask"] = masks.repeat((repeats,) + (1,) * (masks.ndim - 1))
    index = latent.get("batch_index")
    if index is not None:
        index = [int(i) for i in index]
        if index:
            offset = max(index) - min(index) + 1
            out["batch_index"] = [i + r * offset for r in range(repeats) for i in index]
        else:
            out["batch_index"] = []
    return out
