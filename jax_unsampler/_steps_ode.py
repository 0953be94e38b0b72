"""One-step ODE samplers: Euler, Heun (k-diffusion's `sample_euler`, `sample_heun`)."""

from __future__ import annotations

from typing import Any

from ._step_base import Array, Context, Sampler, Sigmas, at_sigma, to_d


def euler(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """`x + d(x, sigma) (sigma_next - sigma)` (k-diffusion's `sample_euler`, no churn)."""
    at = at_sigma(ctx.ops, s.sigma)
    return ctx.blend(x + to_d(x, ctx.den(x, at), at) * (s.next - s.sigma)), state


def heun(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """Karras et al. (2022), Algorithm 1 (k-diffusion's `sample_heun`): an Euler predictor, then
    the mean of both slopes; Euler alone onto sigma 0."""
    at, dt = at_sigma(ctx.ops, s.sigma), s.next - s.sigma
    d = to_d(x, ctx.den(x, at), at)
    x_2 = x + d * dt

    def correct(x_2: Array) -> Array:
        d_2 = to_d(x_2, ctx.den(x_2, s.next), s.next)
        return x + (d + d_2) / 2 * dt

    return ctx.blend(ctx.ops.choose(s.next == 0, lambda v: v, correct, x_2)), state


SAMPLERS = {
    "euler": Sampler(euler),
    "heun": Sampler(heun, calls=2, order=2),
}
