"""Multistep ODE samplers: each keeps the denoised latents (or slopes) of its last steps as its
state (k-diffusion's `sample_dpmpp_2m`, ...)."""

from __future__ import annotations

from typing import NamedTuple

from ._step_base import Array, Context, Ops, Sampler, Sigmas, at_sigma, to_d


class Previous(NamedTuple):
    """The previous step's denoised latent; `have` is False before a pass's first step."""

    denoised: Array
    have: Array


def previous_state(ctx: Context, x: Array) -> Previous:
    return Previous(ctx.ops.zeros_like(x), ctx.ops.scalar(0.0, x) > 0)


class Dpm2m(NamedTuple):
    """DPM-Solver++(2M)'s scalars of a step, with `t = -log sigma`, `h = t_next - t`."""

    ratio: Array  # exp(-t_next) / exp(-t)
    gain: Array  # expm1(-h)
    half: Array  # 1 / (2 r), r = (t - t_prev) / h; 1/2 where the step is first order
    first_order: Array


def dpmpp_2m_coefficients(ops: Ops, s: Sigmas) -> Dpm2m:
    """The scalars of `dpmpp_2m`.

    First order, as k-diffusion, on a pass's first step and onto sigma 0; also where the
    second-order ratio is undefined (a repeated sigma: ComfyUI's own sampler gives NaN there).
    Every value stays finite, so gradients through the unused branch are finite too.
    """
    t = -ops.log(ops.where(s.sigma == 0, 1.0, s.sigma))  # a step from 0 is Euler's (`dpmpp_2m`)
    t_next = -ops.log(s.next)
    h = t_next - t
    r = (t - -ops.log(ops.where(s.prev == 0, 1.0, s.prev))) / h
    first = s.first | (s.next == 0) | ~ops.isfinite(r) | (r == 0)
    half = 1 / (2 * ops.where(first, 1.0, r))
    return Dpm2m(ops.exp(-t_next) / ops.exp(-t), ops.expm1(-h), half, first)


def dpmpp_2m(ctx: Context, x: Array, s: Sigmas, state: Previous) -> tuple[Array, Previous]:
    """k-diffusion's `sample_dpmpp_2m`: `ratio x - gain ((1 + 1/2r) D - 1/2r D_prev)`."""
    ops = ctx.ops
    c = dpmpp_2m_coefficients(ops, s)
    at = at_sigma(ops, s.sigma)
    denoised = ctx.den(x, at)
    update = ops.where(c.first_order, denoised, (1 + c.half) * denoised - c.half * state.denoised)
    x_next = ops.where(
        s.sigma == 0, x + to_d(x, denoised, at) * (s.next - s.sigma), c.ratio * x - c.gain * update
    )
    return ctx.blend(x_next), Previous(denoised, ops.scalar(1.0, x) > 0)


SAMPLERS = {
    "dpmpp_2m": Sampler(dpmpp_2m, previous_state, family="multistep", order=2),
}
