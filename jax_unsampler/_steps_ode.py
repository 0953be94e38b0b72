"""One-step ODE samplers: Euler, Heun, Heun++, DPM-2 and Euler CFG++ (k-diffusion's
`sample_euler`, `sample_heun`, `sample_heunpp2`, `sample_dpm_2`, `sample_euler_cfg_pp`); ComfyUI's
ddim is its euler."""

from __future__ import annotations

from typing import Any

from ._step_base import Array, Context, Sampler, Sigmas, at_sigma, to_d
from ._steps_ancestral import euler_ancestral_cfg_pp


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


def heunpp2(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_heunpp2` (Heun++, sd-webui-samplers-scheduler): slopes at `sigma`,
    after an Euler step at `sigma_next` and after another at `sigma_next_next`, weighted by
    `sigma_j / (3 sigmas[0])` (the first `1 -` the others); Heun's two (`/ (2 sigmas[0])`) onto
    the last sigma but one, Euler onto the last."""
    ops, dt, end = ctx.ops, s.next - s.sigma, s.all[-1]
    d = to_d(x, ctx.den(x, s.sigma), s.sigma)
    x_2 = x + d * dt

    def two_more(x_2: Array) -> Array:
        after = ops.take(s.all, s.i + 2)
        d_2 = to_d(x_2, ctx.den(x_2, s.next), s.next)

        def heun(d_2: Array) -> Array:
            w_2 = s.next / (2 * s.all[0])
            return x + (d * (1 - w_2) + d_2 * w_2) * dt

        def heun_pp(d_2: Array) -> Array:
            x_3 = x_2 + d_2 * (after - s.next)
            d_3 = to_d(x_3, ctx.den(x_3, after), after)
            w_2, w_3 = s.next / (3 * s.all[0]), after / (3 * s.all[0])
            return x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt

        return ops.choose(after == end, heun, heun_pp, d_2)

    return ctx.blend(ops.choose(s.next == end, lambda v: v, two_more, x_2)), state


def dpm_2(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_dpm_2` (DPM-Solver-2, Lu et al. 2022, with Karras et al.'s steps): the
    slope at the log-midpoint `sqrt(sigma sigma_next)` over the whole step; Euler onto 0."""
    ops, dt = ctx.ops, s.next - s.sigma
    d = to_d(x, ctx.den(x, s.sigma), s.sigma)

    def second_order(x: Array) -> Array:
        mid = ops.sqrt(s.sigma * s.next)
        x_2 = x + d * (mid - s.sigma)
        return x + to_d(x_2, ctx.den(x_2, mid), mid) * dt

    return ctx.blend(ops.choose(s.next == 0, lambda v: v + d * dt, second_order, x)), state


def euler_cfg_pp(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_euler_cfg_pp` (CFG++, Chung et al. 2024): its ancestral form without
    noise (`eta` 0, `s_noise` 0)."""
    return euler_ancestral_cfg_pp(ctx._replace(options={"eta": 0.0, "s_noise": 0.0}), x, s, state)


SAMPLERS = {
    "euler": Sampler(euler, steps_from_zero=True),
    "euler_cfg_pp": Sampler(euler_cfg_pp, model_sampling=True),
    "heun": Sampler(heun, calls=2, order=2, steps_from_zero=True),
    "heunpp2": Sampler(heunpp2, calls=3, invertible=False),
    "dpm_2": Sampler(dpm_2, calls=2, order=2),
    "ddim": Sampler(euler, steps_from_zero=True),  # ComfyUI's sampler_object("ddim"): its euler
}
