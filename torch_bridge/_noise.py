"""The original node's torch-seeded noise, applied with jax_unsampler."""

from __future__ import annotations

import torch

from jax_unsampler._names import COUPLINGS, SEED_MAX
from jax_unsampler._validation import check_choice, check_int

from ._convert import to_jax, to_torch


def check_seed(fn: str, seed: object) -> int:
    """`seed` as an int in `[0, 2**64 - 1]`, else a `ValueError`."""
    return check_int(fn, "seed", seed, 0, SEED_MAX)


def torch_noise(seed: int, steps: int, latent: torch.Tensor) -> torch.Tensor:
    """The noise the original node draws: `randn((steps * B, *latent.shape[1:]))`.

    Drawn on the CPU from a fresh `torch.Generator` seeded with `seed`, in the latent's dtype:
    the same numbers as `torch.manual_seed(seed)` followed by the original's
    `torch.randn_like(x.repeat(steps, ...))`, without touching torch's global generator.

    **Arguments:**

    - `seed`: 0 to 2**64 - 1.
    - `steps`: the number of sigmas the batch has.
    - `latent`: the `(B, ...)` torch latent (its shape and dtype are used, not its values).

    **Returns:** a CPU tensor of shape `(steps * B, *latent.shape[1:])`, step-major, in the
    latent's dtype.
    """
    seed = check_seed("torch_noise", seed)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (steps * latent.shape[0], *latent.shape[1:])
    return torch.randn(shape, generator=generator, dtype=latent.dtype, device="cpu")


def noised_latents_torch(
    seed: int,
    latent: torch.Tensor,
    sigmas,
    *,
    normalize: bool = False,
    coupling: str = "independent",
    noise_scaling: str = "eps",
    latent_format=None,
) -> torch.Tensor:
    """The node's noised batch with the original's torch-seeded noise, computed in JAX.

    `z[i*B + b] = x[b] + sigmas[i] * eps[i*B + b]` with `eps` exactly the noise the original
    BatchUnsampler draws after `torch.manual_seed(seed)` (see `torch_noise`), so its output is
    reproduced to float32 rounding, for any batch size and latent rank. The arithmetic runs in
    float32 and is rounded once to the latent's dtype.

    **Arguments:**

    - `seed`: 0 to 2**64 - 1.
    - `latent`: a `(B, ...)` torch tensor, float32, float16 or bfloat16, on any device.
    - `sigmas`: 1-D noise levels (JAX, NumPy or torch), e.g. from
      `jax_unsampler.unsampler_sigmas`.
    - `normalize`: subtract the mean of the first entry from every entry (the node's option).
    - `coupling`, `noise_scaling`, `latent_format`: as for
      `jax_unsampler.noised_latents_from_noise` (the defaults are the original node).

    **Returns:** a `(len(sigmas) * B, ...)` torch tensor in the latent's dtype and on its device.
    """
    import jax.numpy as jnp

    import jax_unsampler as ju

    fn = "noised_latents_torch"
    if not isinstance(latent, torch.Tensor):
        raise ValueError(f"{fn}: latent must be a torch.Tensor, got {type(latent).__name__}")
    check_choice(fn, "coupling", coupling, COUPLINGS)
    seed = check_seed(fn, seed)
    if isinstance(sigmas, torch.Tensor):
        sigmas = to_jax(sigmas.to(torch.float32))
    sigmas = jnp.asarray(sigmas, jnp.float32)
    if sigmas.ndim != 1:
        raise ValueError(f"{fn}: sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    noise = torch_noise(seed, int(sigmas.shape[0]), latent)
    z = ju.noised_latents_from_noise(
        to_jax(latent.cpu()), sigmas, to_jax(noise),
        normalize=normalize, coupling=coupling, noise_scaling=noise_scaling, latent_format=latent_format,
    )  # fmt: skip
    return to_torch(z, device=latent.device)
