"""Samplers that denoise and add fresh noise each step (k-diffusion's `sample_lcm`, ...)."""

from __future__ import annotations

from typing import Any

from ._step_base import Array, Context, Sampler, Sigmas, apply_noise, at_sigma


def lcm(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_lcm`: the denoised latent, re-noised at `sigma_next` while it is > 0."""
    x = ctx.blend(ctx.den(x, at_sigma(ctx.ops, s.sigma)))

    def renoise(x: Array) -> Array:
        return apply_noise(x, ctx.noise(s.sigma, s.next) * s.next, s.next, ctx.noise_scaling)

    return ctx.ops.choose(s.next > 0, renoise, lambda v: v, x), state


SAMPLERS = {
    "lcm": Sampler(lcm, draws=1, family="ancestral", blend_before_noise=True),
}
