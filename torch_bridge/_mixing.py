"""The original iterative mixing sampler's torch-seeded noise, with the path run in JAX."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._convert import to_jax, to_torch
from ._noise import check_seed


def iterative_mixing_sample_torch(
    denoiser: Any,
    seed: int,
    latent: torch.Tensor,
    sigmas: Any,
    *,
    sampler: str = "euler",
    blending_schedule: str = "cosine",
    blending_function: str = "addition",
    alpha_1: float = 2.4,
    start_blending_at_pct: float | None = None,
    stop_blending_at_pct: float | None = None,
    clamp_blending_at_pct: float | None = None,
    blend_min: float = 0.0,
    blend_max: float = 1.0,
    rewind: bool = False,
    rewind_min: float = 0.0,
    rewind_max: float = 0.999,
    normalize_on_mean: bool = False,
) -> torch.Tensor:
    """`jax_unsampler.iterative_mixing_sample` with every random number the original draws.

    After `torch.manual_seed(seed)`, ComfyUI-Iterative-Mixer's sampler draws, in this order,
    from torch's CPU generator: the noised batch of the first pass
    (`randn((len(sigmas) * B, ...))`, the noise of `noised_latents_torch(seed, latent, sigmas)`);
    for LCM, one `randn(latent.shape)` per step whose next sigma is above 0; for each later
    rewind pass, the noised batch of that pass, then its LCM draws. This helper draws the same
    numbers from a `torch.Generator` seeded with `seed` (torch's global generator is left
    alone) and runs the mixing path in JAX with them, so with the same denoiser it reproduces
    the original's output to float32 rounding, for any batch size and latent rank.

    **Arguments:**

    - `denoiser`: a JAX denoiser, `denoiser(x, sigma) -> denoised`, `sigma` of shape `(B,)`.
    - `seed`: 0 to 2**64 - 1, as given to `torch.manual_seed` before the original runs.
    - `latent`: the `(B, ...)` torch tensor the sampler is given.
    - `sigmas`: descending sigmas (torch, NumPy or JAX).
    - The rest: as for `jax_unsampler.iterative_mixing_sample`.

    **Returns:** the final latent as a float32 torch tensor on `latent`'s device.
    """
    import jax.numpy as jnp

    import jax_unsampler as ju
    from jax_unsampler._mixing import blending_schedule as schedule
    from jax_unsampler._mixing import check_mixing, mixing_path

    fn = "iterative_mixing_sample_torch"
    if not isinstance(latent, torch.Tensor):
        raise ValueError(f"{fn}: latent must be a torch.Tensor, got {type(latent).__name__}")
    seed = check_seed(fn, seed)
    if isinstance(sigmas, torch.Tensor):
        sigmas = to_jax(sigmas.detach().cpu().to(torch.float32))
    s_np = np.asarray(sigmas, np.float32)
    x_t = latent.detach().cpu().to(torch.float32)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    first = draw(s_np.shape[0] * x_t.shape[0], *x_t.shape[1:])
    x = to_jax(x_t)
    noised = ju.noised_latents_from_noise(x, jnp.asarray(s_np), to_jax(first))
    x, s, z, ranges, _ = check_mixing(
        fn, denoiser, x, s_np, noised, sampler, blending_schedule, blending_function, rewind, rewind_min,
        rewind_max, normalize_on_mean, True,
    )  # fmt: skip
    steps = s_np.shape[0] - 1
    noise: list[tuple[Any, Any]] = []
    for p, (start, _) in enumerate(ranges):
        eps = to_jax(draw((steps + 1 - start) * x_t.shape[0], *x_t.shape[1:])) if p else None
        table = None
        if sampler == "lcm":
            rows = [
                draw(*x_t.shape) if s_np[i + 1] > 0 else torch.zeros(x_t.shape) for i in range(start, steps)
            ]
            table = to_jax(torch.stack(rows))
        noise.append((eps, table))
    c1 = schedule(
        blending_schedule, steps, alpha_1=alpha_1, start_blending_at_pct=start_blending_at_pct,
        stop_blending_at_pct=stop_blending_at_pct, clamp_blending_at_pct=clamp_blending_at_pct,
        blend_min=blend_min, blend_max=blend_max,
    )  # fmt: skip
    out = mixing_path(
        fn, denoiser, x, s, z, c1, sampler=sampler, blend_name=blending_function, ranges=ranges,
        normalize_on_mean=bool(normalize_on_mean), key=None, noise=noise,
    )  # fmt: skip
    return to_torch(out, device=latent.device)
