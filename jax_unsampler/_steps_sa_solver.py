"""SA-Solver (k-diffusion's `sample_sa_solver`, `sample_sa_solver_pece` and `sa_solver.py`): the
Stochastic Adams predictor-corrector of Xue et al. 2023 (NeurIPS, arXiv:2309.05019), in the half
log-SNR `lambda` of the model's sampling, its noise strength `tau` set on an interval of sigmas."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ._step_base import Array, Context, Ops, Sampler, Sigmas, half_log_snr

OPTIONS = (
    ("eta", 1.0),
    ("sde_start_percent", 0.2),
    ("sde_end_percent", 0.8),
    ("s_noise", 1.0),
    ("predictor_order", 3),
    ("corrector_order", 4),
    ("simple_order_2", False),
)
"""ComfyUI's `SamplerSASolver` options (`eta` and the percents build its default `tau_func`)."""


class SaHistory(NamedTuple):
    """The denoised latents and their `lambda`s of the last steps (newest first), the corrected
    state the last prediction started from, that prediction's noise, `h` and `tau`, and the
    steps the pass has taken."""

    denoised: tuple[Array, ...]
    lams: tuple[Array, ...]
    x: Array
    noise: Array
    h: Array
    tau: Array
    taken: Array


def history_length(ctx: Context) -> int:
    return max(ctx.options["predictor_order"], ctx.options["corrector_order"], 1)


def sa_history(ctx: Context, x: Array) -> SaHistory:
    ops, k = ctx.ops, history_length(ctx)
    zero = ops.scalar(0.0, x)
    return SaHistory(
        (ops.zeros_like(x),) * k, (zero,) * k, ops.zeros_like(x), ops.zeros_like(x), zero, zero, zero
    )


def tau_at(ctx: Context, sigma: Array) -> Array:
    """`get_tau_interval_func`: `eta` between the sigmas at `sde_start_percent` and
    `sde_end_percent` of the model's schedule, 0 elsewhere."""
    eta, percent_sigma = ctx.options["eta"], ctx.percent_sigma
    if eta <= 0:
        return ctx.ops.zeros_like(sigma)
    assert percent_sigma is not None  # both loops give one (which refuses without a model sampling)
    start, end = (
        percent_sigma(ctx.options["sde_start_percent"]),
        percent_sigma(ctx.options["sde_end_percent"]),
    )
    return ctx.ops.where((start >= sigma) & (sigma >= end), eta, 0.0)


def times_linear(poly: list, root: Array) -> list:
    """The coefficients (lowest first) of `poly(u) (u - root)`."""
    return [a - root * b for a, b in zip([0.0, *poly], [*poly, 0.0], strict=True)]


def adams_coefficients(
    ops: Ops, lams: tuple[Array, ...], lam_s: Array, lam_t: Array, tau: Array
) -> list[Array]:
    """`compute_stochastic_adams_b_coeffs` over `alpha_t`: `int tm exp(tm (l - lam_t)) L_j(l) dl`
    from `lam_s` to `lam_t`, `tm = 1 + tau^2`, `L_j` the Lagrange basis on `lams` (eqs. 15, 18), in
    `u = l - lam_s`: the moments of `u^p` by parts (`compute_exponential_coeffs`), then `L_j`'s
    coefficients (the Vandermonde solve)."""
    tm, h = 1 + tau**2, lam_t - lam_s
    moments = [-ops.expm1(-tm * h)]
    for p in range(1, len(lams)):
        moments.append(h**p - p / tm * moments[-1])
    us = [lam - lam_s for lam in lams]
    out = []
    for j, u_j in enumerate(us):
        poly, denom = [1.0], 1.0
        for u_m in us[:j] + us[j + 1 :]:
            poly, denom = times_linear(poly, u_m), denom * (u_j - u_m)
        denom = ops.where(denom == 0, 1.0, denom)  # a repeated lambda: an order not taken
        out.append(sum((c * m for c, m in zip(poly, moments, strict=True)), 0.0) / denom)
    return out


def simple_coefficients(
    ops: Ops, lams: tuple[Array, ...], lam_s: Array, lam_t: Array, tau: Array, corrector: bool
) -> list[Array]:
    """`compute_simple_stochastic_adams_b_coeffs` over `alpha_t` (newest first): SA-Solver's
    simple second order (its Appendix D)."""
    tm, h = 1 + tau**2, lam_t - lam_s
    total = -ops.expm1(-h * tm)
    if corrector:
        newest = 0.5 * tm * h
        return [newest, total - newest]
    older = 0.5 * tm * h**2 / ops.where(lams[1] == lam_s, 1.0, lams[1] - lam_s)
    return [total - older, older]


def adams_update(
    ctx: Context,
    state: SaHistory,
    order: Array,
    most: int,
    lam_s: Array,
    lam_t: Array,
    tau: Array,
    corrector: bool,
) -> Array:
    """`sum_j b_j D_j` over the newest `order` (traced, 1..most) denoised latents of `state`."""
    ops = ctx.ops
    weights = [ops.zeros_like(tau) for _ in range(most)]
    for k in range(1, most + 1):
        lams = state.lams[:k]
        if ctx.options["simple_order_2"] and k == 2:
            b = simple_coefficients(ops, lams, lam_s, lam_t, tau, corrector)
        else:
            b = adams_coefficients(ops, lams, lam_s, lam_t, tau)
        weights = [ops.where(order == k, b[j], w) if j < k else w for j, w in enumerate(weights)]
    return sum(
        (w * d for w, d in zip(weights, state.denoised, strict=False)), ops.zeros_like(state.denoised[0])
    )


def sa_solver(pece: bool) -> Callable[[Context, Array, Sigmas, SaHistory], tuple[Array, SaHistory]]:
    """k-diffusion's `sample_sa_solver` (`use_pece`: `sample_sa_solver_pece`)."""

    def step(ctx: Context, x: Array, s: Sigmas, state: SaHistory) -> tuple[Array, SaHistory]:
        ops, s_noise = ctx.ops, ctx.options["s_noise"]
        p_order, c_order = ctx.options["predictor_order"], ctx.options["corrector_order"]
        n = s.all.shape[0] - 1
        taken = ops.where(s.first, ops.zeros_like(state.taken), state.taken)
        lam = half_log_snr(ctx, s.sigma)
        denoised = ctx.den(x, s.sigma)
        state = state._replace(denoised=(denoised, *state.denoised[:-1]), lams=(lam, *state.lams[:-1]))
        found = ops.minimum(taken + 1, float(history_length(ctx)))
        to_end = s.all[-1] == 0  # lower orders near the end
        p_used = ops.minimum(float(p_order), found)
        p_used = ops.where(to_end, ops.minimum(p_used, n - 1 - s.i), p_used)
        c_used = ops.minimum(float(c_order), found)
        c_used = ops.where(to_end, ops.minimum(c_used, n - s.i), c_used)
        skip = s.first if pece else s.first | (s.next == 0)
        c_used = ops.where(skip, 0.0, c_used)

        def correct(x: Array) -> tuple[Array, Array]:
            alpha = s.sigma * ops.exp(lam)
            update = adams_update(ctx, state, c_used, c_order, state.lams[1], lam, state.tau, True)
            x = s.sigma / s.prev * ops.exp(-(state.tau**2) * state.h) * state.x + alpha * update
            x = x + state.noise  # the last prediction's noise (0 where it drew none)
            return x, ctx.den(x, s.sigma) if pece else denoised

        if c_order > 0:
            x, denoised = ops.choose(c_used > 0, correct, lambda x: (x, denoised), x)
            state = state._replace(denoised=(denoised, *state.denoised[1:]))

        def predict(x: Array) -> tuple[Array, SaHistory]:
            tau = tau_at(ctx, s.next)
            lam_t = half_log_snr(ctx, s.next)
            h = lam_t - lam
            alpha = s.next * ops.exp(lam_t)
            update = adams_update(ctx, state, p_used, p_order, lam, lam_t, tau, False)
            x_pred = s.next / s.sigma * ops.exp(-(tau**2) * h) * x + alpha * update
            noise = ops.zeros_like(x)
            if s_noise > 0:
                scale = s.next * ops.sqrt(-ops.expm1(-2 * tau**2 * h)) * s_noise
                noise = ops.choose(
                    tau > 0, lambda v: ctx.noise(s.sigma, s.next) * scale, lambda v: ops.zeros_like(v), x
                )
            return x_pred + noise, state._replace(x=x, noise=noise, h=h, tau=tau)

        def last(x: Array) -> tuple[Array, SaHistory]:
            return denoised, state._replace(x=denoised)

        x, state = ops.choose(s.next == 0, last, predict, x)
        return ctx.blend(x), state._replace(taken=taken + 1)

    return step


def sa_sampler(pece: bool) -> Sampler:
    return Sampler(sa_solver(pece), sa_history, OPTIONS, 2 if pece else 1, 1, True, True, "SDE", 3)


SAMPLERS = {"sa_solver": sa_sampler(False), "sa_solver_pece": sa_sampler(True)}
