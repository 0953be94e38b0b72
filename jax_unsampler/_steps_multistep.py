"""Multistep ODE samplers: each keeps the denoised latents (or slopes) of its last steps as its
state (k-diffusion's `sample_dpmpp_2m`, `sample_lms`, `sample_ipndm`, `sample_deis`, ...).

The linear multistep ones (lms, ipndm, ipndm_v, deis) step `x + sum_j c_j d_j` over the current
slope and those of the last steps, with coefficients of the step's order: the sigmas of the last
steps are in the state, so the coefficients are computed in the step (a fixed number of scalar
operations, whatever the number of steps)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import NamedTuple

import numpy as np

from ._step_base import Array, Context, Ops, Sampler, Sigmas, at_sigma, to_d


class Previous(NamedTuple):
    """The previous step's denoised latent (CFG++: its unconditional prediction; gradient
    estimation: its slope); `have` is False before a pass's first step."""

    value: Array
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
    update = ops.where(c.first_order, denoised, (1 + c.half) * denoised - c.half * state.value)
    x_next = ops.where(
        s.sigma == 0, x + to_d(x, denoised, at) * (s.next - s.sigma), c.ratio * x - c.gain * update
    )
    return ctx.blend(x_next), Previous(denoised, ops.scalar(1.0, x) > 0)


def dpmpp_2m_cfg_pp(ctx: Context, x: Array, s: Sigmas, state: Previous) -> tuple[Array, Previous]:
    """k-diffusion's `sample_dpmpp_2m_cfg_pp`: DPM-Solver++(2M) with CFG++ (Chung et al. 2024),
    `D + ratio (x - D_uncond) - gain/2r (D - D_uncond_prev)`."""
    c = dpmpp_2m_coefficients(ctx.ops, s)
    denoised, uncond = ctx.guided(x, s.sigma)
    second = ctx.ops.where(c.first_order, 0.0, c.gain * c.half)
    x_next = denoised + c.ratio * (x - uncond) - second * (denoised - state.value)
    return ctx.blend(x_next), Previous(uncond, ctx.ops.scalar(1.0, x) > 0)


def gradient_estimation(cfg_pp: bool) -> Callable[[Context, Array, Sigmas, Previous], tuple[Array, Previous]]:
    """The step of `gradient_estimation` (`cfg_pp`: `gradient_estimation_cfg_pp`)."""

    def step(ctx: Context, x: Array, s: Sigmas, state: Previous) -> tuple[Array, Previous]:
        """k-diffusion's `sample_gradient_estimation` (Permenter & Yuan 2024): Euler (CFG++: `D +
        sigma_next d(x, D_uncond)`), plus `(gamma - 1) (d - d_prev) dt` after the first step."""
        ops, gamma = ctx.ops, ctx.options["ge_gamma"]
        denoised, uncond = ctx.guided(x, s.sigma) if cfg_pp else (ctx.den(x, s.sigma),) * 2
        d, dt = to_d(x, uncond, s.sigma), s.next - s.sigma
        x_next = denoised + d * s.next if cfg_pp else x + d * dt
        x_next = x_next + ops.where(state.have, (gamma - 1) * (d - state.value) * dt, 0.0)
        return ctx.blend(ops.where(s.next == 0, denoised, x_next)), Previous(d, ops.scalar(1.0, x) > 0)

    return step


# --- linear multistep samplers -----------------------------------------------------------------


class Slopes(NamedTuple):
    """The slopes `d` of the last steps and the sigmas they were taken at (newest first), and how
    many of them the pass has (`taken`, at most their number: entries past it are unused)."""

    d: tuple[Array, ...]
    sigma: tuple[Array, ...]
    taken: Array


def slopes_state(option: str) -> Callable[[Context, Array], Slopes]:
    """The state of a sampler of order `ctx.options[option]`: its `order - 1` last slopes."""

    def init(ctx: Context, x: Array) -> Slopes:
        order = ctx.options[option]
        zero = ctx.ops.scalar(0.0, x)
        return Slopes((ctx.ops.zeros_like(x),) * (order - 1), (zero,) * (order - 1), zero)

    return init


def nodes(ops: Ops, taken: Array, current: Array, history: Sequence[Array], step: Array) -> tuple[Array, ...]:
    """`current` and the `history` (newest first) where the pass has it, else `current - k step`
    (the steps continued back: distinct points, so that every formula stays finite)."""
    points: tuple[Array, ...] = (current,)
    for k, value in enumerate(history, 1):
        points += (ops.where(taken >= k, value, current - k * step),)
    return points


def by_order(ops: Ops, taken: Array, rows: Sequence[Sequence[Array | float]]) -> tuple[Array | float, ...]:
    """`rows[taken]`, the coefficients of order `taken + 1` (rows of orders 1, 2, ..., padded with 0)."""
    width = len(rows[-1])
    chosen = (*rows[0], *(0.0,) * (width - len(rows[0])))
    for n, row in enumerate(rows[1:], 1):
        padded = (*row, *(0.0,) * (width - len(row)))
        chosen = tuple(ops.where(taken >= n, new, old) for new, old in zip(padded, chosen, strict=True))
    return chosen


@cache
def legendre(n: int) -> tuple[tuple[float, float], ...]:
    """Gauss-Legendre's `n` nodes and weights on [-1, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return tuple(zip(x.tolist(), w.tolist(), strict=True))


def gauss(a: Array, b: Array, n: int) -> list[tuple[Array, Array]]:
    """The `n`-point Gauss-Legendre rule from `a` to `b` (exact for polynomials of degree 2n - 1)."""
    mid, half = (a + b) / 2, (b - a) / 2
    return [(mid + half * x, half * w) for x, w in legendre(n)]


def lagrange(tau: Array, points: Sequence[Array], j: int) -> Array | float:
    """The Lagrange basis polynomial of `points[j]` at `tau`."""
    out: Array | float = 1.0
    for k, point in enumerate(points):
        if k != j:
            out = out * (tau - point) / (points[j] - point)
    return out


Coefficients = Callable[[Context, Sigmas, Slopes], tuple[Array | float, ...]]


def linear_multistep(
    coefficients: Coefficients, denoised_onto_zero: bool = True
) -> Callable[..., tuple[Array, Slopes]]:
    """The step `x + sum_j c_j d_j` over the current slope and the last ones, newest first, with
    `c = coefficients(ctx, s, state)`; onto sigma 0 the denoised latent where `denoised_onto_zero`."""

    def step(ctx: Context, x: Array, s: Sigmas, state: Slopes) -> tuple[Array, Slopes]:
        ops = ctx.ops
        denoised = ctx.den(x, s.sigma)
        d = to_d(x, denoised, s.sigma)
        c = coefficients(ctx, s, state)
        update = c[0] * d
        for c_j, d_j in zip(c[1:], state.d, strict=True):
            update = update + c_j * d_j
        x_next = x + update
        if denoised_onto_zero:
            x_next = ops.where(s.next == 0, denoised, x_next)
        n = len(state.d)
        kept = Slopes((d, *state.d)[:n], (s.sigma, *state.sigma)[:n], ops.minimum(state.taken + 1, n))
        return ctx.blend(x_next), kept

    return step


IPNDM = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))
"""Adams-Bashforth's weights of orders 1 to 4 (iPNDM's)."""


def ipndm(ctx: Context, s: Sigmas, state: Slopes) -> tuple[Array | float, ...]:
    """k-diffusion's `sample_ipndm` (Zhang & Chen 2023): Adams-Bashforth's fixed weights, times the
    step."""
    dt = s.next - s.sigma
    return tuple(dt * c for c in by_order(ctx.ops, state.taken, IPNDM[: len(state.d) + 1]))


def ipndm_v(ctx: Context, s: Sigmas, state: Slopes) -> tuple[Array | float, ...]:
    """k-diffusion's `sample_ipndm_v`: iPNDM's weights for variable steps `h = sigma_next - sigma`,
    `h_k` the last steps', times the step."""
    h = s.next - s.sigma
    sig = nodes(ctx.ops, state.taken, s.sigma, state.sigma, h)
    hs = [sig[k] - sig[k + 1] for k in range(len(sig) - 1)]
    rows: list[tuple[Array | float, ...]] = [(1.0,)]
    if len(hs) >= 1:
        h1 = hs[0]
        r = h / h1
        rows.append(((2 + r) / 2, -r / 2))
    if len(hs) >= 2:
        h2 = hs[1]
        t1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
        rows.append(((2 + r) / 2 + t1, -r / 2 - (1 + h1 / h2) * t1, t1 * h1 / h2))
    if len(hs) >= 3:
        h3 = hs[2]
        t2 = (
            ((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
            * (h * (h + h1) * (h + h1 + h2))
            / (h1 * (h1 + h2) * (h1 + h2 + h3))
        )
        q = h1 * (h1 + h2) / (h2 * (h2 + h3))
        rows.append((
            (2 + r) / 2 + t1 + t2,
            -r / 2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2,
            t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2,
            -t2 * q * h1 / h2,
        ))  # fmt: skip
    return tuple(h * c for c in by_order(ctx.ops, state.taken, rows))


def lms(ctx: Context, s: Sigmas, state: Slopes) -> tuple[Array | float, ...]:
    """k-diffusion's `sample_lms` (`linear_multistep_coeff`): each slope's Lagrange basis
    polynomial in sigma over the last sigmas, integrated over the step (Gauss-Legendre, exact)."""
    points = nodes(ctx.ops, state.taken, s.sigma, state.sigma, s.next - s.sigma)
    rule = gauss(s.sigma, s.next, (len(points) + 1) // 2)
    rows = [
        tuple(sum(w * lagrange(tau, points[:order], j) for tau, w in rule) for j in range(order))
        for order in range(1, len(points) + 1)
    ]
    return by_order(ctx.ops, state.taken, rows)


VP_BETA_D, VP_BETA_0, VP_BETA_1 = 17.537850650940623, -0.004715818328307364, 17.533134832612316
"""`deis.edm2t`'s VP schedule for sigmas 0.002 to 80, epsilon 1e-3 (as ComfyUI computes it)."""
RIEMANN_POINTS = 10000
"""`get_deis_coeff_list`'s `N`: its integrals are sums over that many points."""


def deis_time(ops: Ops, sigma: Array) -> Array:
    """`edm2t`: DEIS's VP time of a sigma."""
    return (ops.sqrt(VP_BETA_0**2 + 2 * VP_BETA_D * ops.log(sigma**2 + 1)) - VP_BETA_0) / VP_BETA_D


def deis_integrand(ops: Ops, t: Array) -> Array:
    """`cal_intergrand`: `-1/2 d log(alpha)/dt / sqrt(alpha (1 - alpha))` (`dsigma/dt`), with
    `log alpha = -t^2 (beta_1 - beta_0) / 2 - t beta_0`."""
    log_alpha = -0.5 * t**2 * (VP_BETA_1 - VP_BETA_0) - t * VP_BETA_0
    slope = -t * (VP_BETA_1 - VP_BETA_0) - VP_BETA_0
    return -0.5 * slope / ops.sqrt(ops.exp(log_alpha) * -ops.expm1(log_alpha))


def deis(ctx: Context, s: Sigmas, state: Slopes) -> tuple[Array | float, ...]:
    """k-diffusion's `sample_deis` (Zhang & Chen 2023), `deis_mode` 'tab': each slope's Lagrange
    basis in DEIS's time over the last times, times `dsigma/dt`, summed over the step as
    `get_deis_coeff_list` sums it (`N` points, both ends included, times `dt / N`: Gauss-Legendre's
    integral times `(N - 1) / N` plus the ends' halves); Euler onto sigma 0."""
    ops = ctx.ops
    a, b = deis_time(ops, s.sigma), deis_time(ops, s.next)
    points = nodes(ops, state.taken, a, [deis_time(ops, v) for v in state.sigma], b - a)
    rule = [(tau, w * deis_integrand(ops, tau)) for tau, w in gauss(a, b, 8)]
    n, ends = RIEMANN_POINTS, (b - a) / (2 * RIEMANN_POINTS)
    g_a, g_b = deis_integrand(ops, a), deis_integrand(ops, b)
    euler = (s.next - s.sigma,)
    rows: list[tuple[Array | float, ...]] = [euler]
    for order in range(2, len(points) + 1):
        basis = points[:order]
        rows.append(tuple(
            (n - 1) / n * sum(w * lagrange(tau, basis, j) for tau, w in rule)
            + ends * ((g_a if j == 0 else 0.0) + g_b * lagrange(b, basis, j))
            for j in range(order)
        ))  # fmt: skip
    return by_order(ops, ops.where(s.next > 0, state.taken, 0.0), rows)  # Euler onto sigma 0


def gradient_estimation_sampler(cfg_pp: bool) -> Sampler:
    """The registry's entry of `gradient_estimation` (`cfg_pp`: its CFG++ form)."""
    return Sampler(
        gradient_estimation(cfg_pp), previous_state, options=(("ge_gamma", 2.0),), family="multistep"
    )


def linear_multistep_sampler(
    coefficients: Coefficients,
    option: tuple[str, int],
    orders: range,
    onto_zero: bool = True,
    **extra: tuple[object, tuple[object, ...]],
) -> Sampler:
    """The registry's entry of a linear multistep sampler of order `option` (name, default),
    the `orders` ComfyUI's function runs; `extra`: other options, `(default, choices)`."""
    return Sampler(
        linear_multistep(coefficients, onto_zero),
        slopes_state(option[0]),
        options=(option, *((k, v[0]) for k, v in extra.items())),
        family="multistep",
        order=option[1],
        choices=((option[0], orders), *((k, v[1]) for k, v in extra.items())),
    )


SAMPLERS = {
    "dpmpp_2m": Sampler(dpmpp_2m, previous_state, family="multistep", order=2, steps_from_zero=True),
    "dpmpp_2m_cfg_pp": Sampler(dpmpp_2m_cfg_pp, previous_state, family="multistep", order=2),
    # lms: any order ComfyUI runs, up to 16 (each keeps order - 1 latents).
    "lms": linear_multistep_sampler(lms, ("order", 4), range(1, 17)),
    "ipndm": linear_multistep_sampler(ipndm, ("max_order", 4), range(2, 5)),
    "ipndm_v": linear_multistep_sampler(ipndm_v, ("max_order", 4), range(2, 5)),
    "deis": linear_multistep_sampler(
        deis, ("max_order", 3), range(2, 5), onto_zero=False, deis_mode=("tab", ("tab",))
    ),
    "gradient_estimation": gradient_estimation_sampler(False),
    "gradient_estimation_cfg_pp": gradient_estimation_sampler(True),
}
