"""SDE samplers: DPM-Solver++ SDE, its 2M and 3M multistep forms, ER-SDE, SEEDS (k-diffusion's
`sample_dpmpp_sde`, ...): each step adds noise drawn over its own sub-intervals. All of them work
in the half log-SNR `lambda = log(alpha / sigma)` of the model's sampling (`half_log_snr`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ._step_base import (
    Array,
    Context,
    Sampler,
    Sigmas,
    ancestral_step,
    half_log_snr,
    no_state,
    sigma_of_half_log_snr,
)


def lerp(a: Array, b: Array, w: float) -> Array:
    """`a + w (b - a)`, as `torch.lerp` rounds it (from `b` for weights of 1/2 and above)."""
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


def denoised_at_zero(ctx: Context, denoised: Array) -> Callable[[Array], Array]:
    """The step onto sigma 0 of these samplers: the denoised latent."""
    return lambda x: ctx.blend(denoised)


def dpmpp_sde(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_dpmpp_sde`: DPM-Solver++ (Lu et al. 2022), stochastic, two stages
    (to the fraction `r` of the step in lambda, then to its end), each an ancestral step in
    `exp(-lambda)` with its own noise."""
    ops, eta, s_noise, r = ctx.ops, ctx.options["eta"], ctx.options["s_noise"], ctx.options["r"]
    noisy = eta > 0 and s_noise > 0
    denoised = ctx.den(x, s.sigma)

    def step(x: Array) -> Array:
        lam_s, lam_t = half_log_snr(ctx, s.sigma), half_log_snr(ctx, s.next)
        lam_1 = lam_s + r * (lam_t - lam_s)
        sigma_1 = sigma_of_half_log_snr(ctx, lam_1)
        alpha_s = s.sigma * ops.exp(lam_s)

        def stage(lam_to: Array, sigma_to: Array, denoised: Array) -> tuple[Array, Array, Array]:
            alpha_to = sigma_to * ops.exp(lam_to)
            down, up = ancestral_step(ops, ops.exp(-lam_s), ops.exp(-lam_to), eta)
            h = -ops.log(down) - lam_s
            return (alpha_to / alpha_s) * ops.exp(-h) * x - alpha_to * ops.expm1(-h) * denoised, alpha_to, up

        x_2, alpha_1, up = stage(lam_1, sigma_1, denoised)
        if noisy:
            x_2 = x_2 + alpha_1 * ctx.noise(s.sigma, sigma_1) * s_noise * up
        fac = 1 / (2 * r)
        x, alpha_t, up = stage(lam_t, s.next, (1 - fac) * denoised + fac * ctx.den(x_2, sigma_1))
        x = ctx.blend(x)
        if noisy:
            x = x + alpha_t * ctx.noise(s.sigma, s.next) * s_noise * up
        return x

    return ops.choose(s.next == 0, denoised_at_zero(ctx, denoised), step, x), state


class History(NamedTuple):
    """The denoised latents and lambda steps of the last steps (newest first: dummies of 0 and 1
    before there are any), and how many steps the pass has taken."""

    denoised: tuple[Array, ...]
    h: tuple[Array, ...]
    taken: Array


def history(length: int) -> Callable[[Context, Array], History]:
    def init(ctx: Context, x: Array) -> History:
        ones = ctx.ops.scalar(1.0, x)
        return History((ctx.ops.zeros_like(x),) * length, (ones,) * length, ctx.ops.scalar(0.0, x))

    return init


def dpmpp_multistep_sde(order: int) -> Callable[..., tuple[Array, History]]:
    """k-diffusion's `sample_dpmpp_2m_sde` (order 2; `solver_type` `'midpoint'` or `'heun'`) and
    `sample_dpmpp_3m_sde` (order 3, its second step Heun's): DPM-Solver++(2M)/(3M) SDE (Lu et al.
    2022), the exponential integrator in lambda with `eta`-scaled noise, the last steps' denoised
    latents giving the higher-order terms."""

    def step(ctx: Context, x: Array, s: Sigmas, state: History) -> tuple[Array, History]:
        ops, eta, s_noise = ctx.ops, ctx.options["eta"], ctx.options["s_noise"]
        solver = ctx.options["solver_type"] if order == 2 else "heun"
        denoised = ctx.den(x, s.sigma)

        def last(x: Array) -> tuple[Array, Array]:
            return ctx.blend(denoised), state.h[0]

        def update(x: Array) -> tuple[Array, Array]:
            lam_t = half_log_snr(ctx, s.next)
            h = lam_t - half_log_snr(ctx, s.sigma)
            h_eta = h * (eta + 1)
            alpha_t = s.next * ops.exp(lam_t)
            gain = -ops.expm1(-h_eta)
            x = s.next / s.sigma * ops.exp(-h * eta) * x + alpha_t * gain * denoised
            phi_2 = gain / -h_eta + 1
            d1_0 = (denoised - state.denoised[0]) * (h / state.h[0])
            x_2 = x + (0.5 * alpha_t * gain if solver == "midpoint" else alpha_t * phi_2) * d1_0
            if order == 3:
                r0, r1 = state.h[0] / h, state.h[1] / h
                d1_1 = (state.denoised[0] - state.denoised[1]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x_3 = x + (alpha_t * phi_2) * d1 - (alpha_t * (phi_2 / h_eta - 0.5)) * d2
                x_2 = ops.where(state.taken >= 2, x_3, x_2)
            x = ctx.blend(ops.where(state.taken >= 1, x_2, x))
            if eta > 0 and s_noise > 0:
                x = x + ctx.noise(s.sigma, s.next) * s.next * ops.sqrt(-ops.expm1(-2 * h * eta)) * s_noise
            return x, h

        x, h = ops.choose(s.next == 0, last, update, x)
        return x, History((denoised, *state.denoised[:-1]), (h, *state.h[:-1]), state.taken + 1)

    return step


class ErHistory(NamedTuple):
    """ER-SDE's last denoised latent and first difference, the `lambda_er` of the last two step
    starts, and the steps taken."""

    denoised: Array
    derivative: Array
    lams: tuple[Array, Array]
    taken: Array


def er_history(ctx: Context, x: Array) -> ErHistory:
    zero = ctx.ops.scalar(0.0, x)
    return ErHistory(ctx.ops.zeros_like(x), ctx.ops.zeros_like(x), (zero, zero), zero)


POINTS = 200
"""ER-SDE's integration points per step."""


def er_sde(ctx: Context, x: Array, s: Sigmas, state: ErHistory) -> tuple[Array, ErHistory]:
    """k-diffusion's `sample_er_sde`: the VP ER-SDE-Solver-3 (Cui et al. 2023, arXiv:2309.06169)
    in `lambda_er = sigma / alpha`, up to `max_stage` orders, the stage integrals summed over
    200 points."""
    ops, s_noise, max_stage = ctx.ops, ctx.options["s_noise"], ctx.options["max_stage"]
    denoised = ctx.den(x, s.sigma)
    lam_s = ops.exp(-half_log_snr(ctx, s.sigma))

    def scaler(v: Array) -> Array:
        return v * (ops.exp(v**0.3) + 10.0)

    def total(v: Array) -> Array:
        return ops.item_sum(v.reshape(1, -1)).reshape(())

    def update(x: Array) -> tuple[Array, Array]:
        lam_t = ops.exp(-half_log_snr(ctx, s.next))
        alpha_s, alpha_t = s.sigma / lam_s, s.next / lam_t
        r = scaler(lam_t) / scaler(lam_s)
        x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
        derivative = state.derivative
        if max_stage >= 2:
            derivative = (denoised - state.denoised) / (lam_s - state.lams[0])
            dt = lam_t - lam_s
            width = -dt / POINTS
            pos = lam_t + ops.scalar([float(k) for k in range(POINTS)], x) * width
            scaled = scaler(pos)
            x_2 = x + alpha_t * (dt + total(1 / scaled) * width * scaler(lam_t)) * derivative
            if max_stage >= 3:
                second = (derivative - state.derivative) / ((lam_s - state.lams[1]) / 2)
                s_u = total((pos - lam_s) / scaled) * width
                x_3 = x_2 + alpha_t * (dt**2 / 2 + s_u * scaler(lam_t)) * second
                x_2 = ops.where(state.taken >= 2, x_3, x_2)
            x = ops.where(state.taken >= 1, x_2, x)
        x = ctx.blend(x)
        if s_noise > 0:
            scale = ops.sqrt(lam_t**2 - lam_s**2 * r**2)
            x = x + alpha_t * ctx.noise(s.sigma, s.next) * s_noise * ops.where(scale == scale, scale, 0.0)
        return x, derivative

    x, derivative = ops.choose(s.next == 0, lambda v: (ctx.blend(denoised), state.derivative), update, x)
    return x, ErHistory(denoised, derivative, (lam_s, state.lams[0]), state.taken + 1)


def seeds(
    ctx: Context, x: Array, s: Sigmas, rs: tuple[float, ...], data: Callable[[int, Array, list[Array]], Array]
) -> Array:
    """SEEDS (Gonzalez et al. 2023, arXiv:2305.14267), VP data prediction: stages at the
    fractions `rs` of the step in lambda, then its end, each the exponential integrator from `x`
    with `data(k, h_eta, [D, D_2, ...])` its combination of the denoised latents so far (factor
    `-alpha`), the noise chained over the sub-intervals; onto sigma 0 the denoised latent."""
    ops, eta, s_noise = ctx.ops, ctx.options["eta"], ctx.options["s_noise"]
    denoised = ctx.den(x, s.sigma)

    def step(x: Array) -> Array:
        lam_s, lam_t = half_log_snr(ctx, s.sigma), half_log_snr(ctx, s.next)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        found, noise, r_from, sigma_from = [denoised], None, 0.0, s.sigma
        for k, r in enumerate((*rs, 1.0)):
            final = k == len(rs)
            lam = lam_t if final else lerp(lam_s, lam_t, r)
            sigma = s.next if final else sigma_of_half_log_snr(ctx, lam)
            x_k = sigma / s.sigma * ops.exp(-r * h * eta) * x - sigma * ops.exp(lam) * data(k, h_eta, found)
            if final:
                x_k = ctx.blend(x_k)
            if eta > 0 and s_noise > 0:
                segment = (r_from - r) * h * eta
                fresh = ops.sqrt(-ops.expm1(2 * segment)) * ctx.noise(sigma_from, sigma)
                noise = fresh if noise is None else noise * ops.exp(segment) + fresh
                x_k = x_k + noise * sigma * s_noise
            if not final:
                found.append(ctx.den(x_k, sigma))
            r_from, sigma_from = r, sigma
        return x_k

    return ops.choose(s.next == 0, denoised_at_zero(ctx, denoised), step, x)


def phi_2(ops: Any, h: Array) -> Array:
    """`h phi_2(h) = (expm1(h) - h) / h`."""
    return (ops.expm1(h) - h) / h


def seeds_2(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_seeds_2`: SEEDS-2, a stage at the fraction `r` of the step."""
    ops, r = ctx.ops, ctx.options["r"]

    def data(k: int, h_eta: Array, found: list[Array]) -> Array:
        if k == 0:
            return ops.expm1(-r * h_eta) * found[0]
        return ops.expm1(-h_eta) * lerp(found[0], found[1], 1 / (2 * r))

    return seeds(ctx, x, s, (r,), data), state


def seeds_3(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    """k-diffusion's `sample_seeds_3`: SEEDS-3, stages at the fractions `r_1` and `r_2`."""
    ops, r_1, r_2 = ctx.ops, ctx.options["r_1"], ctx.options["r_2"]

    def data(k: int, h_eta: Array, found: list[Array]) -> Array:
        if k == 0:
            return ops.expm1(-r_1 * h_eta) * found[0]
        if k == 1:
            a_2 = r_2 / r_1 * phi_2(ops, -r_2 * h_eta)
            return (ops.expm1(-r_2 * h_eta) - a_2) * found[0] + a_2 * found[1]
        b_3 = phi_2(ops, -h_eta) / r_2
        return (ops.expm1(-h_eta) - b_3) * found[0] + b_3 * found[2]

    return seeds(ctx, x, s, (r_1, r_2), data), state


def sde_sampler(
    step: Callable[..., tuple[Array, Any]],
    options: tuple[tuple[str, Any], ...],
    init: Callable[[Context, Array], Any] = no_state,
    calls: int = 1,
    draws: int = 1,
    order: int = 2,
) -> Sampler:
    """A sampler of this module: it reads the model sampling and moves a flow model's first sigma."""
    return Sampler(step, init, options, calls, draws, True, True, "SDE", order)


NOISE = (("eta", 1.0), ("s_noise", 1.0))
DPMPP_SDE = sde_sampler(dpmpp_sde, (*NOISE, ("r", 0.5)), calls=2, draws=2)
DPMPP_2M_SDE = sde_sampler(
    dpmpp_multistep_sde(2), (*NOISE, ("solver_type", "midpoint")), history(1)
)._replace(choices=(("solver_type", ("midpoint", "heun")),))
DPMPP_2M_SDE_HEUN = DPMPP_2M_SDE._replace(options=(*NOISE, ("solver_type", "heun")))
DPMPP_3M_SDE = sde_sampler(dpmpp_multistep_sde(3), NOISE, history(2), order=3)

SAMPLERS = {
    "dpmpp_sde": DPMPP_SDE,
    "dpmpp_sde_gpu": DPMPP_SDE,
    "dpmpp_2m_sde": DPMPP_2M_SDE,
    "dpmpp_2m_sde_gpu": DPMPP_2M_SDE,
    "dpmpp_2m_sde_heun": DPMPP_2M_SDE_HEUN,
    "dpmpp_2m_sde_heun_gpu": DPMPP_2M_SDE_HEUN,
    "dpmpp_3m_sde": DPMPP_3M_SDE,
    "dpmpp_3m_sde_gpu": DPMPP_3M_SDE,
    "er_sde": sde_sampler(er_sde, (("s_noise", 1.0), ("max_stage", 3)), er_history, order=3),
    "seeds_2": sde_sampler(seeds_2, (*NOISE, ("r", 0.5)), calls=2, draws=2),
    "seeds_3": sde_sampler(seeds_3, (*NOISE, ("r_1", 1.0 / 3), ("r_2", 2.0 / 3)), calls=3, draws=3, order=3),
}
