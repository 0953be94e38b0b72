"""The samplers' steps and the blends, each written once, for JAX arrays and torch tensors alike.

A step reads like its formula (k-diffusion's `sampling.py`): it gets the latent, the step's
sigmas and its own state (DPM++ 2M's previous denoised latent, nothing for the others) and
returns the next latent and state. The arithmetic is `+ - * /` and the few functions of an
`Ops` namespace, so the JAX loop (`_sampling.py`, one `lax.scan` for sampling, mixing and
inversion) and the torch loops (`torch_bridge`) run the same lines. Neither JAX nor torch is
imported here.

Shared rules:

- The slope `d(x, sigma) = (x - D(x, sigma)) / sigma` is evaluated at `INVERSION_ZERO_SIGMA`
  where `sigma` is 0 (the ODE's 0/0), and that slope is used over the whole step: a step that
  starts at sigma 0 is an Euler step whatever the sampler.
- `blend` is the mixing sampler's blend with the step's noised entry (the identity when
  sampling or inverting): after the step (Euler, Heun, DPM++ 2M), or between LCM's denoising
  and its re-noising, as ComfyUI-Iterative-Mixer places it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from ._names import INVERSION_ZERO_SIGMA

Array = Any
"""A `jax.Array` or a `torch.Tensor`."""


class Ops(Protocol):
    """What a step needs beyond `+ - * /` (JAX's and torch's spellings differ)."""

    def where(self, cond: Array, a: Array, b: Array) -> Array: ...
    def choose(
        self, pred: Array, if_true: Callable[[Array], Array], if_false: Callable[[Array], Array], x: Array
    ) -> Array: ...  # noqa: E501
    def log(self, x: Array) -> Array: ...
    def exp(self, x: Array) -> Array: ...
    def expm1(self, x: Array) -> Array: ...
    def sqrt(self, x: Array) -> Array: ...
    def arccos(self, x: Array) -> Array: ...
    def sin(self, x: Array) -> Array: ...
    def isfinite(self, x: Array) -> Array: ...
    def flat(self, x: Array) -> Array: ...  # (B, ...) -> (B, n)
    def item_sum(self, x: Array) -> Array: ...  # (B, n) -> (B, 1)
    def column(self, w: Array, batch: int) -> Array: ...  # a scalar or (B,) weight -> (B, 1)
    def remember(self, state: Array, i: Array, denoised: Array) -> tuple[Array, Array]: ...
    def channel_stats(self, x: Array) -> tuple[Array, Array]: ...  # mean, unbiased std over axes 2..


class Sigmas(NamedTuple):
    """One step: its index, the sigmas before, at and after it, and whether it is the first step
    of its pass (a multistep sampler has no history there)."""

    i: Array
    prev: Array
    sigma: Array
    next: Array
    first: Array


class Context(NamedTuple):
    """What a step calls: the ops, the denoiser `den(x, sigma) -> D` (sigma a scalar, D float32),
    the blend `x -> x` of the step's noised entry, the step's standard normal noise (drawn only
    by the samplers that use it) and ComfyUI's noise scaling (`"eps"` or `"const"`)."""

    ops: Ops
    den: Callable[[Array, Array], Array]
    blend: Callable[[Array], Array]
    noise: Callable[[], Array]
    noise_scaling: str


def at_sigma(ops: Ops, sigma: Array) -> Array:
    """Where the denoiser is evaluated for a step from `sigma`: `sigma`, or the zero rule's sigma."""
    return ops.where(sigma == 0, INVERSION_ZERO_SIGMA, sigma)


def to_d(x: Array, denoised: Array, at: Array) -> Array:
    """k-diffusion's `to_d`: the ODE's slope `(x - D) / sigma`."""
    return (x - denoised) / at


def euler(ctx: Context, x: Array, s: Sigmas, state: Array, c: Any) -> tuple[Array, Array]:
    """`x + d(x, sigma) (sigma_next - sigma)` (k-diffusion's `sample_euler`, no churn)."""
    at = at_sigma(ctx.ops, s.sigma)
    return ctx.blend(x + to_d(x, ctx.den(x, at), at) * (s.next - s.sigma)), state


def heun(ctx: Context, x: Array, s: Sigmas, state: Array, c: Any) -> tuple[Array, Array]:
    """Karras et al. (2022), Algorithm 1 (k-diffusion's `sample_heun`): an Euler predictor, then
    the mean of both slopes; Euler alone onto sigma 0."""
    at, dt = at_sigma(ctx.ops, s.sigma), s.next - s.sigma
    d = to_d(x, ctx.den(x, at), at)
    x_2 = x + d * dt

    def correct(x_2: Array) -> Array:
        d_2 = to_d(x_2, ctx.den(x_2, s.next), s.next)
        return x + (d + d_2) / 2 * dt

    return ctx.blend(ctx.ops.choose(s.next == 0, lambda v: v, correct, x_2)), state


class Dpm2m(NamedTuple):
    """DPM-Solver++(2M)'s scalars of a step, with `t = -log sigma`, `h = t_next - t`."""

    ratio: Array  # exp(-t_next) / exp(-t)
    gain: Array  # expm1(-h)
    half: Array  # 1 / (2 r), r = (t - t_prev) / h; 1/2 where the step is first order
    first_order: Array


def dpmpp_2m_coefficients(ops: Ops, s: Sigmas) -> Dpm2m:
    """The scalars of `dpmpp_2m`, for one step or (vectorised) every step of a pass at once.

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


def dpmpp_2m(ctx: Context, x: Array, s: Sigmas, state: Array, c: Dpm2m) -> tuple[Array, Array]:
    """k-diffusion's `sample_dpmpp_2m`: `ratio x - gain ((1 + 1/2r) D - 1/2r D_prev)`."""
    ops = ctx.ops
    at = at_sigma(ops, s.sigma)
    denoised = ctx.den(x, at)
    state, old = ops.remember(state, s.i, denoised)
    update = ops.where(c.first_order, denoised, (1 + c.half) * denoised - c.half * old)
    x_next = ops.where(
        s.sigma == 0, x + to_d(x, denoised, at) * (s.next - s.sigma), c.ratio * x - c.gain * update
    )
    return ctx.blend(x_next), state


def apply_noise(x: Array, scaled_noise: Array, sigma: Array, scaling: str) -> Array:
    """ComfyUI's `noise_scaling`, given `scaled_noise = sigma * eps`."""
    if scaling == "const":
        return scaled_noise + (1 - sigma) * x
    return x + scaled_noise


def lcm(ctx: Context, x: Array, s: Sigmas, state: Array, c: Any) -> tuple[Array, Array]:
    """k-diffusion's `sample_lcm`: the denoised latent, re-noised at `sigma_next` while it is > 0."""
    x = ctx.blend(ctx.den(x, at_sigma(ctx.ops, s.sigma)))
    renoised = apply_noise(x, ctx.noise() * s.next, s.next, ctx.noise_scaling)
    return ctx.ops.where(s.next > 0, renoised, x), state


class Sampler(NamedTuple):
    step: Callable[[Context, Array, Sigmas, Array, Any], tuple[Array, Array]]
    coefficients: Callable[[Ops, Sigmas], Any] | None = None  # per-step scalars, computed before the loop
    history: bool = False  # keeps the previous denoised latent
    random: bool = False  # draws fresh noise


SAMPLER_STEPS = {
    "euler": Sampler(euler),
    "heun": Sampler(heun),
    "dpmpp_2m": Sampler(dpmpp_2m, dpmpp_2m_coefficients, history=True),
    "lcm": Sampler(lcm, random=True),
}
"""The step of each sampler name of `MIXING_SAMPLERS` and `INVERSION_SAMPLERS`."""


# --- the blends of iterative mixing (ComfyUI-Iterative-Mixer's blending functions) -----------


def addition(ops: Ops, noised: Array, x: Array, w: Array, noised_norm: Array | None = None) -> Array:
    """`(1 - w) noised + w x`."""
    return (1 - w) * noised + w * x


def item_norm(ops: Ops, flat: Array) -> Array:
    """Each item's Euclidean norm, `(B, 1)`, of a flattened `(B, n)` batch."""
    return ops.sqrt(ops.item_sum(flat * flat))


def slerp(ops: Ops, noised: Array, x: Array, w: Array, noised_norm: Array | None = None) -> Array:
    """Spherical interpolation of each item, flattened; `noised_norm`: its norms where known."""
    low, high = ops.flat(noised), ops.flat(x)
    # cos(omega) = (low / |low|) . (high / |high|), 0 where either is the zero vector (the original
    # sets those unit vectors' NaNs to 0), as one dot product over the two norms.
    norms = (item_norm(ops, low) if noised_norm is None else noised_norm) * item_norm(ops, high)
    dot = ops.item_sum(low * high)
    omega = ops.arccos(ops.where(norms == 0, 0.0, dot / norms))
    so = ops.sin(omega)
    w = ops.column(w, low.shape[0])
    out = (ops.sin((1.0 - w) * omega) / so) * low + (ops.sin(w * omega) / so) * high
    return out.reshape(noised.shape)


def norm_only(ops: Ops, noised: Array, x: Array, w: Array, noised_norm: Array | None = None) -> Array:
    """`noised + w (|noised| x / |x| - noised)`, per item."""
    a, b = ops.flat(noised), ops.flat(x)
    a_norm = item_norm(ops, a) if noised_norm is None else noised_norm
    out = a + ops.column(w, a.shape[0]) * (b / item_norm(ops, b) * a_norm - a)
    return out.reshape(noised.shape)


BLENDS = {"addition": addition, "slerp": slerp, "norm_only": norm_only}
"""The blending function of each name of `BLENDING_FUNCTIONS`."""


def match_normalize(ops: Ops, x: Array, reference: Array) -> Array:
    """Per item and channel (axis 1), `x`'s mean and unbiased std over the remaining axes set
    to `reference`'s (the mixing sampler's `normalize_on_mean`)."""
    (tm, ts), (sm, ss) = ops.channel_stats(x), ops.channel_stats(reference)
    return (x - tm) / ts * ss + sm
