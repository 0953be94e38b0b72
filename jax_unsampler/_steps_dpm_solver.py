"""DPM-Solver (k-diffusion's `DPMSolver`: ComfyUI's `dpm_fast` and `dpm_adaptive` wrappers),
which choose their own steps: `sample` only.

Both run in `t = -log sigma` from `sigmas[0]` to the last sigma (the one before it where the last
is 0), with the noise prediction `eps = (x - D) / sigma` (Lu et al. 2022), deterministically
(eta 0, as ComfyUI's wrappers call them).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._step_base import Array, Context, Ops, Sampler, Sigmas


def _sigma(ops: Ops, t: Array) -> Array:
    return ops.exp(-t)


def _eps(ctx: Context, x: Array, t: Array) -> Array:
    sigma = _sigma(ctx.ops, t)
    return (x - ctx.den(x, sigma)) / sigma


def _ends(ops: Ops, sigmas: Array) -> tuple[Array, Array]:
    """`(t_start, t_end)`: ComfyUI's wrappers' sigma_max and sigma_min, in t."""
    sigma_min = ops.where(sigmas[-1] == 0, sigmas[-2], sigmas[-1])
    return -ops.log(sigmas[0]), -ops.log(sigma_min)


class _Stages:
    """The DPM-Solver-1/2/3 updates from `t` over `h`, sharing their first stages."""

    def __init__(self, ctx: Context, x: Array, t: Array, t_next: Array) -> None:
        self.ctx, self.x, self.t, self.t_next, self.h = ctx, x, t, t_next, t_next - t
        self.eps = _eps(ctx, x, t)
        self.base = x - _sigma(ctx.ops, t_next) * ctx.ops.expm1(self.h) * self.eps  # DPM-Solver-1

    def stage(self, r: Array | float, correction: Array | float = 0.0) -> Array:
        """`eps` at `t + r h` after the first-order update there (plus `correction`)."""
        ops, s = self.ctx.ops, self.t + r * self.h
        return _eps(self.ctx, self.x - _sigma(ops, s) * ops.expm1(r * self.h) * self.eps - correction, s)

    def second(self, eps_r1: Array, r1: float) -> Array:
        ops = self.ctx.ops
        return self.base - _sigma(ops, self.t_next) / (2 * r1) * ops.expm1(self.h) * (eps_r1 - self.eps)

    def third(self, eps_r1: Array, r1: float = 1 / 3, r2: float = 2 / 3) -> Array:
        ops, h = self.ctx.ops, self.h
        s2 = self.t + r2 * h
        phi = ops.expm1(r2 * h) / (r2 * h) - 1
        eps_r2 = self.stage(r2, _sigma(ops, s2) * (r2 / r1) * phi * (eps_r1 - self.eps))
        return self.base - _sigma(ops, self.t_next) / r2 * (ops.expm1(h) / h - 1) * (eps_r2 - self.eps)


def _linspace_at(ops: Ops, start: Array, end: Array, n: int, i: Array | int) -> Array:
    """Entry `i` of torch's `linspace(start, end, n)` (its two halves, each from its end)."""
    step = (end - start) / (n - 1)
    return ops.where(i < n // 2, start + step * i, end - step * (n - 1 - i))


def dpm_fast(ctx: Context, x: Array, sigmas: Array) -> Array:
    """ComfyUI's `dpm_fast` (k-diffusion's `DPMSolver.dpm_solver_fast`, Lu et al. 2022): steps of
    order 3 on a uniform t grid, the last ones of order 2 and 1, `len(sigmas) - 1` calls in all.
    The order-3 steps are one loop (compile time flat in the step count), the last ones after."""
    ops = ctx.ops
    nfe = sigmas.shape[0] - 1
    m = nfe // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    start, end = _ends(ops, sigmas)

    def stages(i: Array | int, x: Array) -> _Stages:
        return _Stages(
            ctx, x, _linspace_at(ops, start, end, m + 1, i), _linspace_at(ops, start, end, m + 1, i + 1)
        )

    def third(i: Array, x: Array) -> Array:
        st = stages(i, x)
        return st.third(st.stage(1 / 3))

    thirds = orders.count(3)
    x = ops.fori_loop(thirds, third, x)
    for i, order in enumerate(orders[thirds:], start=thirds):
        st = stages(i, x)
        x = st.base if order == 1 else st.second(st.stage(1 / 2), 1 / 2)
    return x


class _Adaptive(NamedTuple):
    """The adaptive loop's carry: where it is, its proposed step, the PID's history of inverse
    errors (`started`: after the first proposal), and the latest lower-order solution."""

    s: Array
    h: Array
    x: Array
    x_prev: Array
    inv1: Array
    inv2: Array
    started: Array


def _atan(ops: Ops, y: Array) -> Array:
    """`atan(y) = pi/2 - arccos(y / sqrt(1 + y^2))` (accurate near 0)."""
    return math.pi / 2 - ops.arccos(y / ops.sqrt(1 + y * y))


def dpm_adaptive(ctx: Context, x: Array, sigmas: Array) -> Array:
    """ComfyUI's `dpm_adaptive` (k-diffusion's `DPMSolver.dpm_solver_adaptive`, Lu et al. 2022):
    embedded DPM-Solver-12 or -23 pairs with a PID step size controller, in a while loop."""
    ops, opt = ctx.ops, ctx.options
    order = opt["order"]
    t_start, t_end = _ends(ops, sigmas)
    forward = t_end > t_start
    b1 = (opt["pcoeff"] + opt["icoeff"] + opt["dcoeff"]) / order
    b2 = -(opt["pcoeff"] + 2 * opt["dcoeff"]) / order
    b3 = opt["dcoeff"] / order
    size = x.reshape(-1).shape[0]

    def going(c: _Adaptive) -> Array:
        return ops.where(forward, c.s < t_end - 1e-5, c.s > t_end + 1e-5)

    def attempt(c: _Adaptive) -> _Adaptive:
        t = ops.where(forward, ops.minimum(t_end, c.s + c.h), ops.maximum(t_end, c.s + c.h))
        st = _Stages(ctx, c.x, c.s, t)
        if order == 2:
            low, high = st.base, st.second(st.stage(1 / 2), 1 / 2)
        else:
            eps_r1 = st.stage(1 / 3)
            low, high = st.second(eps_r1, 1 / 3), st.third(eps_r1)
        delta = ops.maximum(opt["atol"], opt["rtol"] * ops.maximum(ops.abs(low), ops.abs(c.x_prev)))
        ratio = ((low - high) / delta).reshape(1, -1)
        error = ops.sqrt(ops.item_sum(ratio * ratio).reshape(())) / math.sqrt(size)
        inv = 1 / (error + 1e-8)
        inv1, inv2 = ops.where(c.started, c.inv1, inv), ops.where(c.started, c.inv2, inv)
        factor = 1 + _atan(ops, ops.exp(b1 * ops.log(inv) + b2 * ops.log(inv1) + b3 * ops.log(inv2)) - 1)
        ok = factor >= opt["accept_safety"]
        return _Adaptive(
            ops.where(ok, t, c.s), c.h * factor, ops.where(ok, high, c.x), ops.where(ok, low, c.x_prev),
            ops.where(ok, inv, inv1), ops.where(ok, inv1, inv2), ops.scalar(1.0, x) > 0,
        )  # fmt: skip

    h0 = ops.where(forward, abs(opt["h_init"]), -abs(opt["h_init"]))
    one = ops.scalar(1.0, x)
    init = _Adaptive(t_start, h0 * one, x, x, one, one, one < 0)
    return ops.while_loop(going, attempt, init).x


def _no_step(ctx: Context, x: Array, s: Sigmas, state: Any) -> tuple[Array, Any]:
    raise NotImplementedError("dpm_fast and dpm_adaptive choose their own steps: Sampler.solve")


SAMPLERS = {
    "dpm_fast": Sampler(_no_step, calls=1, order=3, fixed_grid=False, solve=dpm_fast),
    "dpm_adaptive": Sampler(
        _no_step,
        options=(
            ("order", 3),
            ("rtol", 0.05),
            ("atol", 0.0078),
            ("h_init", 0.05),
            ("pcoeff", 0.0),
            ("icoeff", 1.0),
            ("dcoeff", 0.0),
            ("accept_safety", 0.81),
        ),
        calls=3,
        order=3,
        fixed_grid=False,
        solve=dpm_adaptive,
        choices=(("order", (2, 3)),),
    ),  # fmt: skip
}
