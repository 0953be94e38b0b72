"""Iterative mixing with the original's torch-seeded draws: around a JAX denoiser (the JAX loop
fed the draws) or a torch one (ComfyUI's model: the package's steps run in torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from jax_unsampler._steps import SAMPLER_STEPS, match_normalize

from ._convert import to_jax, to_torch
from ._inversion import check_latent_tensor
from ._noise import check_seed
from ._sampling import TORCH_OPS, TorchDenoiser, model_sampling_reads, run_steps

_OPTIONS = (
    "sampler", "blending_schedule", "blending_function", "alpha_1", "start_blending_at_pct",
    "stop_blending_at_pct", "clamp_blending_at_pct", "blend_min", "blend_max", "rewind", "rewind_min",
    "rewind_max", "normalize_on_mean", "options", "model_sampling",
)  # fmt: skip
"""The mixing settings both functions take, passed on as `jax_unsampler.iterative_mixing_sample`'s."""

_SCHEDULE_VALUES = (
    "alpha_1", "start_blending_at_pct", "stop_blending_at_pct", "clamp_blending_at_pct", "blend_min",
    "blend_max",
)  # fmt: skip


def _check(
    fn: str, denoiser: Any, seed: object, latent: object, sigmas: Any, noised: Any, options: dict
) -> Any:
    """The one mixing check (`jax_unsampler._mixing.check_mixing`) and the schedule, before
    anything is drawn: `(seed, checked settings, c1)`."""
    from jax_unsampler._blending import schedule_for
    from jax_unsampler._mixing import check_mixing

    seed = check_seed(fn, seed)
    x = check_latent_tensor(fn, latent)
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().cpu().to(torch.float32).numpy()
    z = None
    if noised is not None:
        z = to_jax(check_latent_tensor(fn, noised, "noised").detach().cpu().to(torch.float32))
    settings = {k: v for k, v in options.items() if k not in _SCHEDULE_VALUES}
    m = check_mixing(fn, denoiser, to_jax(x.detach().cpu().to(torch.float32)), sigmas, z, **settings)
    values = {k: options[k] for k in _SCHEDULE_VALUES}
    c1 = schedule_for(fn, options["blending_schedule"], m.sigmas.shape[0] - 1, **values)
    return seed, m, c1


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
    options: dict[str, Any] | None = None,
    noise: Callable[[Any, Any], Any] | None = None,
    model_sampling: Any = None,
) -> torch.Tensor:
    """`jax_unsampler.iterative_mixing_sample` with every random number the original draws.

    After `torch.manual_seed(seed)`, ComfyUI-Iterative-Mixer's sampler draws, in this order,
    from torch's CPU generator: the noised batch of the first pass
    (`randn((len(sigmas) * B, ...))`, the noise of `noised_latents_torch(seed, latent, sigmas)`);
    for LCM, one `randn(latent.shape)` per step whose next sigma is above 0 (for the other
    samplers that draw noise, as many a step as they ask for, in their order); for each later
    rewind pass, the noised batch of that pass, then its steps' draws. This helper draws the same
    numbers from a `torch.Generator` seeded with `seed` (torch's global generator is left
    alone) and runs the package's jitted mixing loop with them, so with the same denoiser it
    reproduces the original's output to float32 rounding, for any batch size and latent rank.
    Everything is checked before anything is drawn.

    **Arguments:**

    - `denoiser`: a JAX denoiser, `denoiser(x, sigma) -> denoised`, `sigma` of shape `(B,)`.
    - `seed`: 0 to 2**64 - 1, as given to `torch.manual_seed` before the original runs.
    - `latent`: the `(B, ...)` torch tensor the sampler is given (floating, finite).
    - `sigmas`: descending sigmas (torch, NumPy or JAX).
    - `sampler`, `blending_schedule`, `blending_function`, `alpha_1`, `start_blending_at_pct`,
      `stop_blending_at_pct`, `clamp_blending_at_pct`, `blend_min`, `blend_max`, `rewind`,
      `rewind_min`, `rewind_max`, `normalize_on_mean`, `options`, `model_sampling`: as for
      `jax_unsampler.iterative_mixing_sample` (checked by the same code, with the same words).
    - `noise`: a JAX `noise(sigma, sigma_next)` for the sampler's own draws (then none are
      drawn from the generator for the steps), as for `jax_unsampler.iterative_mixing_sample`.

    **Returns:** the final latent as a float32 torch tensor on `latent`'s device.
    """
    import jax.numpy as jnp

    import jax_unsampler as ju
    from jax_unsampler._denoiser_args import denoiser_errors, split_denoiser
    from jax_unsampler._mixing import MixingStatics, mixing_kernel, noise_tables

    fn = "iterative_mixing_sample_torch"
    settings = {name: value for name, value in locals().items() if name in _OPTIONS}
    seed, m, c1 = _check(fn, denoiser, seed, latent, sigmas, None, settings)
    s_np = np.asarray(m.sigmas)
    steps = s_np.shape[0] - 1
    x_t = latent.detach().cpu().to(torch.float32)
    shape = tuple(x_t.shape)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def draw(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=generator, dtype=torch.float32)

    if x_t.numel() == 0:
        return torch.zeros(shape, dtype=torch.float32, device=latent.device)
    first = draw(s_np.shape[0] * shape[0], *shape[1:])
    x = to_jax(x_t)
    noised = ju.noised_latents_from_noise(x, jnp.asarray(s_np), to_jax(first))
    per_pass: list[tuple[Any, Any]] = []
    per_step = 0 if noise is not None else SAMPLER_STEPS[m.run.sampler].draws
    for p, (start, _) in enumerate(m.ranges):
        eps = draw((steps + 1 - start) * shape[0], *shape[1:]).numpy() if p else None
        table = None
        if per_step:  # each step's draws, made where the step ends above 0 (the original's LCM order)
            rows = [
                torch.stack(
                    [draw(*shape) if s_np[i + 1] > 0 else torch.zeros(shape) for _ in range(per_step)]
                )
                for i in range(start, steps)
            ]
            table = torch.stack(rows).numpy()
        per_pass.append((eps, table))
    tables = noise_tables(per_pass, m.ranges, steps, shape)
    arrays, static = split_denoiser(fn, denoiser, x)
    starts = jnp.asarray([start for start, _ in m.ranges], jnp.int32)
    statics = MixingStatics(static, m.run, bool(normalize_on_mean))
    with denoiser_errors(fn):
        out = mixing_kernel(
            arrays, x, m.sigmas, noised, c1, tables, starts, m.model_sampling, statics=statics, noise=noise
        )
    return to_torch(out, device=latent.device)


def mixing_sample_torch(
    denoiser: TorchDenoiser,
    latent: torch.Tensor,
    sigmas: Any,
    *,
    seed: int,
    noised: torch.Tensor | None = None,
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
    options: dict[str, Any] | None = None,
    noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    model_sampling: Any = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor, int], None] | None = None,
) -> torch.Tensor:
    """Iterative mixing around a torch denoiser (a ComfyUI model), with the original's draws.

    The package's own steps and blends (`jax_unsampler._steps`) run in torch on the latent's
    device, so a model JAX cannot trace mixes exactly as `jax_unsampler.iterative_mixing_sample`
    mixes, with the draws of `iterative_mixing_sample_torch` (a `torch.Generator` seeded with
    `seed`: the noised batch when `noised` is None, the sampler's per-step noise, each rewind pass's
    batch, in the original's order). Everything is checked before anything is drawn.

    **Arguments:**

    - `denoiser`: `denoiser(x, sigma)`, `x` a float32 `(B, ...)` tensor, `sigma` a `(B,)`
      float32 tensor, returning the denoised tensor of `x`'s shape (e.g. ComfyUI's wrapped
      model with its `extra_args` inside a KSAMPLER function).
    - `latent`: the `(B, ...)` latent tensor (floating, finite).
    - `sigmas`: descending (noisiest first), at least two (a tensor or a sequence).
    - `seed`: 0 to 2**64 - 1.
    - `noised`: the `(len(sigmas) * B, ...)` noised batch along `sigmas` (noisiest first), or
      None to draw it as the original does (`latent + sigma * randn`).
    - `sampler`, `blending_schedule`, `blending_function`, `alpha_1`, `start_blending_at_pct`,
      `stop_blending_at_pct`, `clamp_blending_at_pct`, `blend_min`, `blend_max`, `rewind`,
      `rewind_min`, `rewind_max`, `normalize_on_mean`, `options`, `model_sampling`: as for
      `jax_unsampler.iterative_mixing_sample` (checked by the same code, with the same words).
    - `noise`: `noise(sigma, sigma_next)` (torch tensors) for the sampler's own draws, in place
      of the generator's.
    - `callback`: called as `callback(i, denoised, x, total)` after step `i` (ComfyUI's
      progress), with the state after the step in place of the denoised latent.

    **Returns:** the final latent on `latent`'s device, in `latent`'s dtype (computed in
    float32).
    """
    fn = "mixing_sample_torch"
    settings = {name: value for name, value in locals().items() if name in _OPTIONS}
    seed, m, schedule = _check(fn, denoiser, seed, latent, sigmas, noised, settings)
    c1 = torch.from_numpy(np.array(schedule, np.float32))
    device = latent.device
    x0 = latent.detach().to(torch.float32)
    sig = torch.from_numpy(np.array(m.sigmas, np.float32)).to(device)
    steps, batch = sig.shape[0] - 1, x0.shape[0]
    if x0.numel() == 0:
        return torch.zeros_like(latent)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def draw(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=generator, dtype=torch.float32).to(device)

    if noised is None:
        eps = draw(sig.shape[0] * batch, *x0.shape[1:])
        z = (x0.repeat(sig.shape[0], *[1] * (x0.ndim - 1)) + eps * sig.repeat_interleave(batch).reshape(
            -1, *[1] * (x0.ndim - 1)))  # fmt: skip
    else:
        z = noised.detach().to(device=device, dtype=torch.float32)
    x = x0
    total = steps * len(m.ranges)
    first_sigma, percents = model_sampling_reads(m.model_sampling, device)

    def fresh_noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return draw(*x0.shape)

    def report(i: int, state: torch.Tensor) -> None:
        if callback is not None:
            callback(i, state, state, total)

    for p, (start, _) in enumerate(m.ranges):
        if p:
            fresh = draw((steps + 1 - start) * batch, *x0.shape[1:]).reshape(
                steps + 1 - start, batch, *x0.shape[1:]
            )
            base = x
            z_pass = {i: base + fresh[i - start] * sig[i] for i in range(start, steps)}
            entry = z_pass.__getitem__
        else:

            def entry(i: int) -> torch.Tensor:
                return z[i * batch : (i + 1) * batch]

        x = run_steps(
            fn, m.run.sampler, denoiser, x, sig, start=start, entry=entry, blend=m.run.blend,
            c1=c1.to(device),
            noise=fresh_noise if noise is None else noise, noise_scaling=m.run.noise_scaling,
            options=m.run.options, on_state=report, first_sigma=first_sigma, percent_sigma=percents,
        )  # fmt: skip
    if normalize_on_mean:
        x = match_normalize(TORCH_OPS, x, x0)
    return x.to(latent.dtype)  # computed in float32, returned in the latent's dtype (as the JAX function)
