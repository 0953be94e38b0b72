"""The samplers' steps of `jax_unsampler._steps` on torch tensors, around a torch denoiser.

A ComfyUI model is a torch module that JAX cannot trace, so the nodes run the package's steps
here, in a Python loop: the same step and blend functions as the JAX loop, with torch's
spellings of the few functions they call (`TORCH_OPS`). Sigmas are float32 0-d tensors, as
k-diffusion's samplers index them, so the arithmetic is the original's, in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from jax_unsampler._steps import BLENDS, SAMPLER_STEPS, Context, Sigmas

TorchDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`D(x, sigma)`: `(B, ...)` latents at a `(B,)` sigma -> the denoised `(B, ...)` latents."""


def _tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=torch.float32, device=like.device)


class _TorchOps:
    """`jax_unsampler._steps.Ops` for torch tensors."""

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        if isinstance(cond, bool):
            return a if cond else b
        like = cond
        return torch.where(cond, _tensor(a, like), _tensor(b, like))

    @staticmethod
    def choose(pred: Any, if_true: Callable, if_false: Callable, x: torch.Tensor) -> torch.Tensor:
        return if_true(x) if bool(pred) else if_false(x)

    log = staticmethod(torch.log)
    exp = staticmethod(torch.exp)
    expm1 = staticmethod(torch.expm1)
    sqrt = staticmethod(torch.sqrt)
    arccos = staticmethod(torch.arccos)
    sin = staticmethod(torch.sin)
    isfinite = staticmethod(torch.isfinite)

    @staticmethod
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def item_sum(x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)

    @staticmethod
    def column(w: Any, batch: int) -> torch.Tensor:
        return torch.as_tensor(w, dtype=torch.float32).expand(batch).reshape(-1, 1)

    @staticmethod
    def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        axes = tuple(range(2, x.ndim))
        return x.mean(dim=axes, keepdim=True), x.std(dim=axes, keepdim=True, unbiased=True)

    @staticmethod
    def remember(state: Any, i: Any, denoised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The previous denoised latent is the state (zeros before the first step)."""
        return denoised, torch.zeros_like(denoised) if state is None else state


TORCH_OPS: Any = _TorchOps()  # an `_steps.Ops`


def call_denoiser(fn: str, denoiser: TorchDenoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """`denoiser(x, sigma * ones(B))` in float32, checked to return a tensor of x's shape."""
    out = denoiser(x, sigma.reshape(1).expand(x.shape[0]).to(torch.float32))
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{fn}: denoiser must return an array of the latent's shape {tuple(x.shape)}, got {got}"
        )
    if not (out.is_floating_point()):
        raise ValueError(f"{fn}: denoiser must return a real floating array, got dtype {out.dtype}")
    return out.to(torch.float32)


def run_steps(
    fn: str,
    sampler: str,
    denoiser: TorchDenoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    start: int = 0,
    entry: Callable[[int], torch.Tensor] | None = None,
    blend: str | None = None,
    c1: torch.Tensor | None = None,
    draw: Callable[[], torch.Tensor] | None = None,
    noise_scaling: str = "eps",
    skip_equal: bool = False,
    on_state: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """One pass of `sampler` over steps `start..len(sigmas)-2` from `x` (float32, model space).

    Mixing: `entry(i)` is step `i`'s noised latent (the pass starts from `entry(start)`) and the
    blend is `blend` with weight `c1[i]`. `draw()` gives a standard normal latent, called only
    for LCM's steps that end above 0 (the original's draws, in its order). `on_state(i, x)` is
    called with the state after step `i`.
    """
    spec = SAMPLER_STEPS[sampler]
    ops = TORCH_OPS
    sig = sigmas.to(device=x.device, dtype=torch.float32)
    state: Any = None
    blend_fn = None if blend is None else BLENDS[blend]
    if entry is not None:
        x = entry(start)
    n = sig.shape[0] - 1
    for i in range(start, n):
        s = Sigmas(i, sig[i - 1] if i > start else sig[i], sig[i], sig[i + 1], i == start)
        if skip_equal and bool(s.next == s.sigma):
            if on_state is not None:
                on_state(i, x)
            continue
        z = None if entry is None else entry(i)
        w = None if c1 is None else c1[i]

        def mix(v: torch.Tensor, z: Any = z, w: Any = w) -> torch.Tensor:
            return v if blend_fn is None else blend_fn(ops, z, v, w, None)

        def noise(s: Sigmas = s, like: torch.Tensor = x) -> torch.Tensor:
            if draw is None or not bool(s.next > 0):
                return torch.zeros_like(like)
            return draw().to(like.device)

        ctx = Context(ops, lambda v, at: call_denoiser(fn, denoiser, v, at), mix, noise, noise_scaling)
        coefficients = None if spec.coefficients is None else spec.coefficients(ops, s)
        x, state = spec.step(ctx, x, s, state, coefficients)
        if on_state is not None:
            on_state(i, x)
    return x
