"""UniPC (ComfyUI's `extra_samplers/uni_pc.py`: `sample_unipc`, `sample_unipc_bh2`).

ComfyUI runs UniPC's multistep data-prediction update (Zhao et al. 2023) in VP form over
`lambda = -log sigma` with the denoiser as the data prediction; written in `x = x_vp / alpha`
the update is `(sigma_t / sigma) x - expm1(-h) D_0 - B(h) sum rho D1`, the same for every model.
The wrapper's order is `min(3, steps - 1)` (the first steps lower, `lower_order_final`), the
corrector runs on every step but the last, and a final sigma 0 is replaced by 0.001: the result
is left at sigma 0.001.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._step_base import Array, Context, Sampler, Sigmas

FINAL_SIGMA = 0.001
"""Where ComfyUI's UniPC ends when the last sigma is 0."""


class History(NamedTuple):
    """The denoised latents at the last three sigmas (newest first), the two older lambdas, and
    the steps the pass has taken (its history: a rewind pass or inversion's step from sigma 0
    starts none)."""

    d0: Array
    d1: Array
    d2: Array
    lam1: Array
    lam2: Array
    taken: Array


def history(ctx: Context, x: Array) -> History:
    zero = ctx.ops.zeros_like(x)
    return History(zero, zero, zero, ctx.ops.scalar(0.0, x), ctx.ops.scalar(0.0, x), ctx.ops.scalar(0.0, x))


def _unipc(ctx: Context, x: Array, s: Sigmas, state: History, bh2: bool) -> tuple[Array, History]:
    """One update of UniPC-B(h) (order p: predictor from p denoised latents, corrector p + 1)."""
    ops = ctx.ops
    n = s.all.shape[0] - 1
    top = min(3, n - 1)
    target = ops.where(s.next == 0, FINAL_SIGMA, s.next)
    if n == 1:  # ComfyUI's order 0: no update, only the VP scalings in and out
        return ctx.blend(x * ops.sqrt(1 + target**2) / ops.sqrt(1 + s.sigma**2)), state
    k, have = s.i + 1, ops.where(s.first, 0.0, state.taken) + 1  # this step's index, its history
    p = ops.where(have < top, have, ops.where(n + 1 - k < top, n + 1 - k, top))
    d0 = ops.choose(s.first, lambda v: ctx.den(v, s.sigma), lambda v: state.d0, x)
    lam0 = -ops.log(s.sigma)
    h = -ops.log(target) - lam0
    # the history's lambdas relative to h; placeholders (distinct, finite) where unused
    r1 = ops.where(p >= 2, (state.lam1 - lam0) / h, -1.0)
    r2 = ops.where(p >= 3, (state.lam2 - lam0) / h, -2.0)
    hh = -h
    phi1 = ops.expm1(hh)
    big_b = phi1 if bh2 else hh
    g1 = phi1 / hh - 1
    g2 = g1 / hh - 1 / 2
    g3 = g2 / hh - 1 / 6
    b1, b2, b3 = g1 / big_b, 2 * g2 / big_b, 6 * g3 / big_b
    e1, e2 = (state.d1 - d0) / r1, (state.d2 - d0) / r2
    # predictor: rho solves sum_m rho_m r_m^j = b_{j+1} over the history's nodes (order 2: 1/2)
    p1 = ops.where(p == 2, 0.5, ops.where(p == 3, (b2 - r2 * b1) / (r1 - r2), 0.0))
    p2 = ops.where(p == 3, (b2 - r1 * b1) / (r2 - r1), 0.0)
    base = target / s.sigma * x - phi1 * d0
    x_pred = base - big_b * (p1 * e1 + p2 * e2)

    def correct(x_pred: Array) -> tuple[Array, Array]:
        d_t = ctx.den(x_pred, target)
        # corrector: the same system over the nodes and 1 (order 1: 1/2)
        c1 = ops.where(
            p == 2,
            (b2 - b1) / (r1 - 1),
            ops.where(p == 3, (b3 - (r2 + 1) * b2 + r2 * b1) / ((r1 - r2) * (r1 - 1)), 0.0),
        )
        c2 = ops.where(p == 3, (b3 - (r1 + 1) * b2 + r1 * b1) / ((r2 - r1) * (r2 - 1)), 0.0)
        c_t = ops.where(
            p == 1,
            0.5,
            ops.where(
                p == 2,
                (b2 - r1 * b1) / (1 - r1),
                (b3 - (r1 + r2) * b2 + r1 * r2 * b1) / ((1 - r1) * (1 - r2)),
            ),
        )
        return base - big_b * (c1 * e1 + c2 * e2 + c_t * (d_t - d0)), d_t

    x_next, d_t = ops.choose(k == n, lambda v: (v, d0), correct, x_pred)
    return ctx.blend(x_next), History(d_t, d0, state.d1, lam0, state.lam1, have)


def unipc(ctx: Context, x: Array, s: Sigmas, state: History) -> tuple[Array, Any]:
    """ComfyUI's `sample_unipc` (UniPC-B(h) with B(h) = h; Zhao et al. 2023)."""
    return _unipc(ctx, x, s, state, bh2=False)


def unipc_bh2(ctx: Context, x: Array, s: Sigmas, state: History) -> tuple[Array, Any]:
    """ComfyUI's `sample_unipc_bh2` (UniPC-B(h) with B(h) = expm1(h); Zhao et al. 2023)."""
    return _unipc(ctx, x, s, state, bh2=True)


SAMPLERS = {
    "uni_pc": Sampler(unipc, history, family="multistep", order=3),
    "uni_pc_bh2": Sampler(unipc_bh2, history, family="multistep", order=3),
}
