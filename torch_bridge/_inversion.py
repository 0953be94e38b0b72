"""`jax_unsampler.inverted_latents` in torch: the same recurrence around a torch denoiser.

A ComfyUI model is a torch module that cannot be traced by JAX, so the node inverts with it
here, step by step, with the formulas, the sigma-0 rule and the layout of the JAX function
(tests/test_torch_bridge_inversion.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from jax_unsampler._names import INVERSION_SOLVERS, INVERSION_ZERO_SIGMA
from jax_unsampler._validation import check_choice

TorchDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`D(x, sigma)`: `(B, ...)` latents at a `(B,)` sigma -> the denoised `(B, ...)` latents."""

TorchMap = Callable[[torch.Tensor], torch.Tensor]


def _slope(fn: str, denoiser: TorchDenoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    at = INVERSION_ZERO_SIGMA if sigma == 0 else sigma
    denoised = denoiser(x, torch.full((x.shape[0],), at, dtype=torch.float32, device=x.device))
    if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
        got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
        raise ValueError(
            f"{fn}: denoiser must return a tensor of the latent's shape {tuple(x.shape)}, got {got}"
        )
    # As the JAX function: the sigma is a float32 value, the arithmetic float32.
    at32 = torch.tensor(at, dtype=torch.float32, device=x.device)
    return (x - denoised.to(torch.float32)) / at32


def inverted_latents_torch(
    denoiser: TorchDenoiser,
    latent: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    solver: str = "euler",
    process_in: TorchMap | None = None,
    process_out: TorchMap | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The latent's probability-flow ODE trajectory, as `jax_unsampler.inverted_latents`.

    Entry `i` is the state at `sigmas[i]`, entry 0 the latent itself; Euler or Heun steps with
    `d(x, s) = (x - D(x, s)) / s`; a step from sigma 0 takes its slope at
    `INVERSION_ZERO_SIGMA`; a step between equal sigmas calls no denoiser. Everything is
    float32 on the latent's device; each state is moved to the CPU as it is made.

    **Arguments:**

    - `denoiser`: `D(x, sigma)` with float32 `(B, ...)` latents and a `(B,)` float32 sigma.
    - `latent`: the `(B, ...)` latent tensor.
    - `sigmas`: ascending, non-negative.
    - `solver`: `"euler"` or `"heun"`.
    - `process_in`, `process_out`: the model's latent format maps (LATENT to model space and
      back), or `None` to run in the latent's own space.
    - `on_step`: called with `(steps done, total steps)` after each step (a progress bar).

    **Returns:** the `(len(sigmas) * B, ...)` trajectory on the CPU, in the latent's dtype.
    """
    fn = "inverted_latents_torch"
    check_choice(fn, "solver", solver, INVERSION_SOLVERS)
    values = [
        float(s) for s in (sigmas.detach().cpu().float().tolist() if torch.is_tensor(sigmas) else sigmas)
    ]
    if any(not s >= 0 for s in values):
        raise ValueError(f"{fn}: sigmas must be non-negative numbers, got {values}")
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            raise ValueError(
                f"{fn}: sigmas must be ascending (least noise first), got {values[i - 1]} then "
                f"{values[i]} at index {i}"
            )
    if latent.ndim < 2:
        raise ValueError(f"{fn}: latent must have a batch axis and one more, got shape {tuple(latent.shape)}")
    # float32 sigmas as the JAX function sees them (its sigmas are a float32 array).
    values = torch.tensor(values, dtype=torch.float32).tolist()
    out = [latent.detach().cpu()]
    state = latent.detach().to(torch.float32)
    if process_in is not None:
        state = process_in(state)
    total = len(values) - 1
    for i in range(total):
        sigma, sigma_next = values[i], values[i + 1]
        if sigma_next != sigma:
            h = torch.tensor(sigma_next, dtype=torch.float32) - torch.tensor(sigma, dtype=torch.float32)
            h = h.to(state.device)
            d = _slope(fn, denoiser, state, sigma)
            if solver == "euler":
                state = state + h * d
            else:
                d_next = _slope(fn, denoiser, state + h * d, sigma_next)
                state = state + h * (d + d_next) / 2
        emitted = state if process_out is None else process_out(state)
        out.append(emitted.to(latent.dtype).cpu())
        if on_step is not None:
            on_step(i + 1, total)
    return torch.cat(out)
