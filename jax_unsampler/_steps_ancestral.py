"""Samplers that denoise and add fresh noise each step: LCM, the ancestral Euler, DPM-2,
DPM-Solver++(2S) and RES multistep samplers, DDPM (k-diffusion's `sample_lcm`,
`sample_euler_ancestral`, ...), with ComfyUI's `_RF` forms for flow models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ._step_base import (
    Array,
    Context,
    Sampler,
    Sigmas,
    ancestral_step,
    apply_noise,
    at_sigma,
    half_log_snr,
    sigma_of_half_log_snr,
    to_d,
)


def lcm(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_lcm`: the denoised latent, re-noised at `sigma_next` while it is > 0."""
    x = ctx.blend(ctx.den(x, at_sigma(ctx.ops, s.sigma)))

    def renoise(x: Array) -> Array:
        return apply_noise(x, ctx.noise(s.sigma, s.next) * s.next, s.next, ctx.noise_scaling)

    return ctx.ops.choose(s.next > 0, renoise, lambda v: v, x), state


class Ancestral(NamedTuple):
    """An ancestral step's `sigma_down`, noise scale `up` and the factor `keep` of the latent as
    the noise is added: k-diffusion's `get_ancestral_step` (`keep` 1), or for flow models the
    `_RF` forms' `sigma_next (1 + (sigma_next / sigma - 1) eta)`, `alpha_next / alpha_down` and
    `sqrt(sigma_next^2 - sigma_down^2 alpha_next^2 / alpha_down^2)`, `alpha = 1 - sigma`."""

    down: Array
    up: Array
    keep: Array | float


def ancestral(ctx: Context, s: Sigmas, eta: float) -> Ancestral:
    if not ctx.flow:
        return Ancestral(*ancestral_step(ctx.ops, s.sigma, s.next, eta), 1.0)
    down = s.next * (1 + (s.next / s.sigma - 1) * eta)
    keep = (1 - s.next) / (1 - down)
    kept = down * keep  # sqrt(sigma_next^2 - kept^2) as a product: 0 at eta 0 under `jit` too
    return Ancestral(down, ctx.ops.sqrt((s.next - kept) * (s.next + kept)), keep)


def renoised(ctx: Context, x: Array, s: Sigmas, a: Ancestral, when: Array | bool) -> Array:
    """`keep x + s_noise up noise(sigma, sigma_next)` where `when`, else `x`."""

    def add(x: Array) -> Array:
        return a.keep * x + ctx.noise(s.sigma, s.next) * ctx.options["s_noise"] * a.up

    return ctx.ops.choose(when, add, lambda v: v, x)


def toward(x: Array, denoised: Array, sigma: Array, sigma_to: Array) -> Array:
    """The Euler step of the ODE from `sigma` to `sigma_to`: `x + (sigma_to - sigma) (x - D) / sigma`,
    written `(sigma_to / sigma) x + (1 - sigma_to / sigma) D`."""
    ratio = sigma_to / sigma
    return ratio * x + (1 - ratio) * denoised


def euler_ancestral(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_euler_ancestral` (`_RF` for flow models): Euler onto `sigma_down`,
    then noise of scale `sigma_up`; onto sigma 0 the denoised latent."""
    eta = ctx.options["eta"]
    a = ancestral(ctx, s, eta)
    x = ctx.blend(toward(x, ctx.den(x, s.sigma), s.sigma, a.down))
    if not ctx.flow:
        return renoised(ctx, x, s, a, a.down != 0), state
    return (renoised(ctx, x, s, a, s.next != 0) if eta > 0 else x), state


def dpm_2_ancestral(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_dpm_2_ancestral` (`_RF` for flow models): DPM-Solver-2 (Lu et al.
    2022) onto `sigma_down` through its log-midpoint, then noise; Euler alone onto 0."""
    a = ancestral(ctx, s, ctx.options["eta"])
    d = to_d(x, ctx.den(x, s.sigma), s.sigma)

    def euler(x: Array) -> Array:
        return x + d * (a.down - s.sigma)

    def second_order(x: Array) -> Array:
        mid = ctx.ops.sqrt(s.sigma * a.down)
        x_2 = x + d * (mid - s.sigma)
        x = ctx.blend(x + to_d(x_2, ctx.den(x_2, mid), mid) * (a.down - s.sigma))
        return renoised(ctx, x, s, a, True)

    return ctx.ops.choose(a.down == 0, lambda v: ctx.blend(euler(v)), second_order, x), state


def dpmpp_2s(
    ctx: Context, x: Array, denoised: Array, uncond: Array, s: Sigmas, down: Array, mid: Array, cfg_pp: bool
) -> Array:
    """DPM-Solver++(2S)'s two exponential-integrator steps from `sigma` to `down` through `mid`,
    on `x + (D - D_uncond)` (CFG++, with each call's unconditional prediction; else `uncond` is
    `D`)."""
    ratio = mid / s.sigma
    x_2 = ratio * (x + (denoised - uncond)) + (1 - ratio) * denoised
    if cfg_pp:
        denoised_2, uncond = ctx.guided(x_2, mid)
    else:
        denoised_2 = ctx.den(x_2, mid)
    ratio = down / s.sigma
    return ratio * (x + (denoised - uncond)) + (1 - ratio) * denoised_2


def midpoint(ctx: Context, s: Sigmas, down: Array) -> Array:
    """The sigma halfway from `sigma` to `down` in half log-SNR (0.9999 from a flow model's 1)."""
    lam = half_log_snr(ctx, s.sigma)
    mid = sigma_of_half_log_snr(ctx, lam + (half_log_snr(ctx, down) - lam) / 2)
    return ctx.ops.where(s.sigma == 1, 0.9999, mid) if ctx.flow else mid


def dpmpp_2s_ancestral(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_dpmpp_2s_ancestral` (`_RF` for flow models): DPM-Solver++(2S) (Lu
    et al. 2022) onto `sigma_down`, then noise; Euler onto 0."""
    eta = ctx.options["eta"]
    a = ancestral(ctx, s, eta)
    denoised = ctx.den(x, s.sigma)

    def euler(x: Array) -> Array:
        return x + to_d(x, denoised, s.sigma) * (a.down - s.sigma)

    def second_order(x: Array) -> Array:
        return dpmpp_2s(ctx, x, denoised, denoised, s, a.down, midpoint(ctx, s, a.down), False)

    x = ctx.blend(ctx.ops.choose((s.next if ctx.flow else a.down) == 0, euler, second_order, x))
    if ctx.flow and not eta > 0:
        return x, state
    return renoised(ctx, x, s, a, s.next > 0), state


def dpmpp_2s_ancestral_cfg_pp(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_dpmpp_2s_ancestral_cfg_pp`: DPM-Solver++(2S) with CFG++ (Chung et
    al. 2024), the latent moved by `D - D_uncond`; onto 0, `D + sigma_down d(x, D_uncond)`."""
    a = Ancestral(*ancestral_step(ctx.ops, s.sigma, s.next, ctx.options["eta"]), 1.0)
    denoised, uncond = ctx.guided(x, s.sigma)

    def euler(x: Array) -> Array:
        return denoised + to_d(x, uncond, s.sigma) * a.down

    def second_order(x: Array) -> Array:
        mid = ctx.ops.sqrt(s.sigma * a.down)
        return dpmpp_2s(ctx, x, denoised, uncond, s, a.down, mid, True)

    x = ctx.blend(ctx.ops.choose(a.down == 0, euler, second_order, x))
    return renoised(ctx, x, s, a, s.next > 0), state


def euler_ancestral_cfg_pp(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_euler_ancestral_cfg_pp`: CFG++ (Chung et al. 2024) DDIM-like step,
    `alpha_t D + sigma_down d(x, alpha_s D_uncond)` in the `sigma / alpha` scale, then noise."""
    ops, eta, s_noise = ctx.ops, ctx.options["eta"], ctx.options["s_noise"]
    denoised, uncond = ctx.guided(x, s.sigma)

    def step(x: Array) -> Array:
        alpha_s = s.sigma * ops.exp(half_log_snr(ctx, s.sigma))
        alpha_t = s.next * ops.exp(half_log_snr(ctx, s.next))
        down, up = ancestral_step(ops, s.sigma / alpha_s, s.next / alpha_t, eta)
        x = ctx.blend(alpha_t * denoised + alpha_t * down * to_d(x, alpha_s * uncond, s.sigma))
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * ctx.noise(s.sigma, s.next) * s_noise * up
        return x

    return ops.choose(s.next == 0, lambda v: ctx.blend(denoised), step, x), state


def ddpm(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_ddpm` (Ho et al. 2020): the DDPM posterior mean in the VP scale
    `x / sqrt(1 + sigma^2)`, `alpha = alpha_bar / alpha_bar_next`, plus its noise above 0."""
    ops = ctx.ops
    eps = (x - ctx.den(x, s.sigma)) / s.sigma
    bar, bar_next = 1 / (s.sigma**2 + 1), 1 / (s.next**2 + 1)
    alpha = bar / bar_next
    mean = ops.sqrt(1 / alpha) * (x / ops.sqrt(1 + s.sigma**2) - (1 - alpha) * eps / ops.sqrt(1 - bar))
    scale = ops.sqrt(1 + s.next**2)
    std = ops.sqrt((1 - alpha) * (1 - bar_next) / (1 - bar))

    def add(x: Array) -> Array:
        return x + std * ctx.noise(s.sigma, s.next) * scale

    return ops.choose(s.next > 0, add, lambda v: v, ctx.blend(mean * scale)), state


class ResPrevious(NamedTuple):
    """RES multistep's previous step: its denoised latent (CFG++: unconditional), `sigma_down`,
    and whether there is one."""

    denoised: Array
    down: Array
    have: Array


def res_previous(ctx: Context, x: Array) -> ResPrevious:
    return ResPrevious(ctx.ops.zeros_like(x), ctx.ops.scalar(1.0, x), ctx.ops.scalar(0.0, x) > 0)


def res_multistep(ancestral_eta: bool, cfg_pp: bool) -> Callable[..., tuple[Array, ResPrevious]]:
    """k-diffusion's `res_multistep` (RES, Zhang et al. 2023, arXiv:2308.02157): the second-order
    exponential multistep onto `sigma_down` (Euler on the first step and onto 0), then noise;
    `eta` 0 unless `ancestral_eta`; CFG++ reads the unconditional prediction."""

    def step(ctx: Context, x: Array, s: Sigmas, state: ResPrevious) -> tuple[Array, ResPrevious]:
        ops = ctx.ops
        eta = ctx.options["eta"] if ancestral_eta else 0.0
        down, up = ancestral_step(ops, s.sigma, s.next, eta)
        denoised, uncond = ctx.guided(x, s.sigma) if cfg_pp else (ctx.den(x, s.sigma),) * 2

        def euler(x: Array) -> Array:
            if cfg_pp:
                return denoised + to_d(x, uncond, s.sigma) * down
            return x + to_d(x, denoised, s.sigma) * (down - s.sigma)

        def multistep(x: Array) -> Array:
            t, t_old, t_next, t_prev = (-ops.log(v) for v in (s.sigma, state.down, down, s.prev))
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi_1 = ops.expm1(-h) / -h
            phi_2 = (phi_1 - 1) / -h
            b1, b2 = (ops.where(v == v, v, 0.0) for v in (phi_1 - phi_2 / c2, phi_2 / c2))
            return ops.exp(-h) * (x + (denoised - uncond)) + h * (b1 * uncond + b2 * state.denoised)

        x = ctx.blend(ops.choose((down == 0) | ~state.have, euler, multistep, x))
        if ancestral_eta:
            x = renoised(ctx, x, s, Ancestral(down, up, 1.0), s.next > 0)
        return x, ResPrevious(uncond, down, ops.scalar(1.0, x) > 0)

    return step


NOISE = (("eta", 1.0), ("s_noise", 1.0))

SAMPLERS = {
    "lcm": Sampler(lcm, draws=1, family="ancestral", blend_before_noise=True),
    "euler_ancestral": Sampler(
        euler_ancestral, options=NOISE, draws=1, model_sampling=True, family="ancestral",
        blend_before_noise=True,
    ),
    "euler_ancestral_cfg_pp": Sampler(
        euler_ancestral_cfg_pp, options=NOISE, draws=1, model_sampling=True, family="ancestral",
        blend_before_noise=True,
    ),
    "dpm_2_ancestral": Sampler(
        dpm_2_ancestral, options=NOISE, calls=2, draws=1, model_sampling=True, family="ancestral",
        order=2, blend_before_noise=True,
    ),
    "dpmpp_2s_ancestral": Sampler(
        dpmpp_2s_ancestral, options=NOISE, calls=2, draws=1, model_sampling=True, family="ancestral",
        order=2, blend_before_noise=True,
    ),
    "dpmpp_2s_ancestral_cfg_pp": Sampler(
        dpmpp_2s_ancestral_cfg_pp, options=NOISE, calls=2, draws=1, family="ancestral", order=2,
        blend_before_noise=True,
    ),
    "ddpm": Sampler(ddpm, draws=1, family="ancestral", blend_before_noise=True),
    "res_multistep": Sampler(res_multistep(False, False), res_previous, family="multistep", order=2),
    "res_multistep_cfg_pp": Sampler(res_multistep(False, True), res_previous, family="multistep", order=2),
    "res_multistep_ancestral": Sampler(
        res_multistep(True, False), res_previous, NOISE, draws=1, family="ancestral", order=2,
        blend_before_noise=True,
    ),
    "res_multistep_ancestral_cfg_pp": Sampler(
        res_multistep(True, True), res_previous, NOISE, draws=1, family="ancestral", order=2,
        blend_before_noise=True,
    ),
}  # fmt: skip
