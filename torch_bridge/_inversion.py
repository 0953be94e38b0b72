"""`jax_unsampler.inverted_latents` in torch: the same steps around a torch denoiser.

A ComfyUI model is a torch module that cannot be traced by JAX, so the node inverts with it
here, with the package's own step functions (`torch_bridge._sampling`), the sigma-0 rule and
the layout of the JAX function (tests/test_torch_bridge_inversion.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from jax_unsampler._names import INVERSION_SAMPLERS
from jax_unsampler._steps import sampler_options
from jax_unsampler._validation import check_choice, check_denoiser, check_sigmas, renamed_argument

from ._sampling import TorchDenoiser, run_steps

TorchMap = Callable[[torch.Tensor], torch.Tensor]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_latent_tensor(fn: str, latent: object, what: str = "latent") -> torch.Tensor:
    """The torch side of the one latent rule: a floating `(B, ...)` tensor, finite."""
    if not isinstance(latent, torch.Tensor):
        raise ValueError(f"{fn}: {what} must be a torch.Tensor, got {type(latent).__name__}")
    if latent.ndim < 2:
        raise ValueError(
            f"{fn}: {what} must have a batch axis and at least 1 more (rank >= 2), "
            f"got shape {tuple(latent.shape)}"
        )
    if latent.dtype not in _FLOATS:
        raise ValueError(
            f"{fn}: {what} must be floating point (float32, float16 or bfloat16), got {latent.dtype}"
        )
    if latent.device.type == "meta":
        raise ValueError(
            f"{fn}: {what} is on device {latent.device} (a tensor without data); give a tensor on "
            f"cpu or an accelerator (e.g. {what}.to('cpu'))"
        )
    if latent.numel() and not bool(torch.isfinite(latent).all()):
        raise ValueError(f"{fn}: {what} contains NaN or infinite values")
    return latent


def sigma_values(fn: str, sigmas: object, order: str, min_len: int = 0) -> torch.Tensor:
    """The one sigma rule (`jax_unsampler._validation.check_sigmas`), as a float32 CPU tensor."""
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().cpu().numpy()
    checked = check_sigmas(fn, sigmas, order=order, min_len=min_len)
    return torch.from_numpy(np.array(checked, np.float32))


@renamed_argument("solver", "sampler", since="0.3.0")
def inverted_latents_torch(
    denoiser: TorchDenoiser,
    latent: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    sampler: str = "euler",
    process_in: TorchMap | None = None,
    process_out: TorchMap | None = None,
    on_step: Callable[[int, int], None] | None = None,
    options: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The latent's probability-flow ODE trajectory, as `jax_unsampler.inverted_latents`.

    Entry `i` is the state at `sigmas[i]`, entry 0 the latent itself; the steps of
    `INVERSION_SAMPLERS` with `d(x, s) = (x - D(x, s)) / s`; a step from sigma 0 takes its slope
    at `INVERSION_ZERO_SIGMA`; a step between equal sigmas calls no denoiser. Everything is
    float32 on the latent's device; each state is moved to the CPU as it is made.

    **Arguments:**

    - `denoiser`: `D(x, sigma)` with float32 `(B, ...)` latents and a `(B,)` float32 sigma.
    - `latent`: the `(B, ...)` latent tensor (floating, finite).
    - `sigmas`: ascending, non-negative, finite (a sequence or a tensor).
    - `sampler`: one of `INVERSION_SAMPLERS` (`solver=` is its deprecated former name).
    - `process_in`, `process_out`: the model's latent format maps (LATENT to model space and
      back), or `None` to run in the latent's own space.
    - `on_step`: called with `(steps done, total steps)` after each step (a progress bar).
    - `options`: the sampler's options by ComfyUI's names, as for `jax_unsampler.sample`.

    **Returns:** the `(len(sigmas) * B, ...)` trajectory on the CPU, in the latent's dtype.
    """
    fn = "inverted_latents_torch"
    sampler = check_choice(fn, "sampler", sampler, INVERSION_SAMPLERS)
    opts = sampler_options(fn, sampler, options)
    check_denoiser(fn, denoiser)
    latent = check_latent_tensor(fn, latent)
    sig = sigma_values(fn, sigmas, "ascending")
    if sig.shape[0] == 0:
        return torch.zeros((0, *latent.shape[1:]), dtype=latent.dtype)
    out = [latent.detach().cpu()]
    state = latent.detach().to(torch.float32)
    if process_in is not None:
        state = process_in(state)
    total = sig.shape[0] - 1

    def emit(i: int, x: torch.Tensor) -> None:
        emitted = x if process_out is None else process_out(x)
        out.append(emitted.to(latent.dtype).cpu())
        if on_step is not None:
            on_step(i + 1, total)

    run_steps(fn, sampler, denoiser, state, sig, options=opts, skip_equal=True, zero_rule=True, on_state=emit)
    return torch.cat(out)
