"""The sampler protocol: what a step is given, what it returns, and the rules steps share.

A sampler (diffrax's shape) is a step with its own state: `init(ctx, x)` builds the state
before a pass's first step (any pytree: nothing, the previous denoised latent, a history of
derivatives), and `step(ctx, x, s, state) -> (x_next, state)` reads like its formula
(k-diffusion's `sampling.py`). One loop drives every sampler: `_sampling.integrate` (a
`lax.scan`, JAX) and `torch_bridge._sampling.run_steps` (a Python loop, torch). The loop
threads the state without knowing its structure.

A step's arithmetic is `+ - * /` and the functions of an `Ops` namespace, so the same lines
run on JAX arrays and torch tensors. Neither JAX nor torch is imported here.

A step gets from its `Context`:

- `den(x, sigma)`: the denoiser at a scalar sigma (float32, checked);
- `den_uncond(x, sigma) -> (denoised, uncond)`: the guided and the unconditional predictions
  (one denoiser evaluation), for the CFG++ samplers: a `cfg_denoiser`'s, else the denoiser's
  own prediction twice (ComfyUI at cfg 1);
- `noise(sigma, sigma_next)`: standard normal noise of the latent's shape for the interval
  (k-diffusion's `noise_sampler`), as often as the step needs it;
- `blend(x)`: the mixing sampler's blend with the step's noised entry (the identity when
  sampling or inverting);
- `options`: the sampler's options, ComfyUI's names, defaults filled in;
- `noise_scaling`: `"eps"`, or `"const"` for rectified-flow (CONST) models, where ComfyUI's
  samplers take their `_RF` forms and their half log-SNR is `log((1 - sigma) / sigma)`;
- `percent_sigma(percent)`: the model sampling's sigma at a (static) percent of its schedule
  (ComfyUI's `percent_to_sigma`), for the samplers that read it (sa_solver's tau interval);
  without a model sampling it refuses in one line, naming the function and the sampler.

For the samplers that read the model sampling (`Sampler.model_sampling`), the loop moves a
flow model's first sigma off 1 as ComfyUI's `offset_first_sigma_for_snr` does, before the
first step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from ._names import INVERSION_ZERO_SIGMA

Array = Any
"""A `jax.Array` or a `torch.Tensor`."""


class Ops(Protocol):
    """What a step needs beyond `+ - * /` (JAX's and torch's spellings differ)."""

    def where(self, cond: Array, a: Array, b: Array) -> Array: ...
    def choose(
        self, pred: Array, if_true: Callable[[Any], Any], if_false: Callable[[Any], Any], operand: Any
    ) -> Any: ...  # lax.cond / a Python if: only one branch runs
    def log(self, x: Array) -> Array: ...
    def exp(self, x: Array) -> Array: ...
    def expm1(self, x: Array) -> Array: ...
    def log1p(self, x: Array) -> Array: ...
    def sqrt(self, x: Array) -> Array: ...
    def arccos(self, x: Array) -> Array: ...
    def sin(self, x: Array) -> Array: ...
    def abs(self, x: Array) -> Array: ...
    def sigmoid(self, x: Array) -> Array: ...
    def minimum(self, a: Array, b: Array) -> Array: ...
    def maximum(self, a: Array, b: Array) -> Array: ...
    def isfinite(self, x: Array) -> Array: ...
    def zeros_like(self, x: Array) -> Array: ...
    def scalar(self, value: Any, like: Array) -> Array: ...  # a float32 0-d array on like's device
    def take(self, table: Array, i: Array) -> Array: ...  # table[i] along axis 0 (i traced)
    def while_loop(
        self, cond: Callable[[Any], Array], body: Callable[[Any], Any], init: Any
    ) -> Any: ...  # lax.while_loop / a Python while
    def fori_loop(
        self, n: int, body: Callable[[Array, Any], Any], init: Any
    ) -> Any: ...  # lax.fori_loop over a static count (a scan: reverse-differentiable) / a for loop
    def flat(self, x: Array) -> Array: ...  # (B, ...) -> (B, n)
    def item_sum(self, x: Array) -> Array: ...  # (B, n) -> (B, 1)
    def column(self, w: Array, batch: int) -> Array: ...  # a scalar or (B,) weight -> (B, 1)
    def channel_stats(self, x: Array) -> tuple[Array, Array]: ...  # mean, unbiased std over axes 2..


class Sigmas(NamedTuple):
    """One step: its index, the sigmas before, at and after it, whether it is the first step of
    its pass (a multistep sampler has no history there), and the pass's whole sigma array
    (float32, for samplers whose coefficients read it: lms, deis)."""

    i: Array
    prev: Array
    sigma: Array
    next: Array
    first: Array
    all: Array


class Context(NamedTuple):
    """What a step calls (see the module docstring)."""

    ops: Ops
    den: Callable[[Array, Array], Array]
    blend: Callable[[Array], Array]
    noise: Callable[[Array, Array], Array]
    noise_scaling: str = "eps"
    options: Mapping[str, Any] = {}
    den_uncond: Callable[[Array, Array], tuple[Array, Array]] | None = None
    percent_sigma: Callable[[float], Array] | None = None

    def guided(self, x: Array, sigma: Array) -> tuple[Array, Array]:
        """`(denoised, uncond)` (see the module docstring)."""
        if self.den_uncond is None:
            d = self.den(x, sigma)
            return d, d
        return self.den_uncond(x, sigma)

    @property
    def flow(self) -> bool:
        """A rectified-flow (CONST) model: ComfyUI's `_RF` forms and flow half log-SNR."""
        return self.noise_scaling == "const"


def no_model_sampling(fn: str, sampler: str) -> Callable[[float], Array]:
    """`Context.percent_sigma` where no model sampling was given: a one-line refusal."""

    def refuse(percent: float) -> Array:
        raise ValueError(
            f"{fn}: sampler {sampler!r} reads the model's sampling (the sigma at {percent:g} of its "
            f"schedule): pass model_sampling= (e.g. jax_unsampler.preset('sd15').model_sampling)"
        )

    return refuse


def no_state(ctx: Context, x: Array) -> Array:
    """The state of a sampler that keeps none."""
    return ctx.ops.scalar(0.0, x)


class Sampler(NamedTuple):
    """A sampler: its step, its state, its options and what it needs (the registry's entry).

    - `step(ctx, x, s, state) -> (x_next, state)`; `init(ctx, x) -> state` (any pytree).
    - `options`: `(name, default)` pairs, ComfyUI's names and defaults (static); `choices`:
      `(name, values)` pairs, the values an option may take where not every value of its type
      works (a tuple, or a `range` of ints), refused otherwise before anything runs.
    - `calls`: denoiser calls a step (the docs' table).
    - `draws`: the noise draws a step asks for (0: deterministic; the torch-seeded tables hold
      this many per step).
    - `model_sampling`: whether it reads the model's sampling (its `_RF` form or half log-SNR
      for flow models, from `ctx.flow`); `snr_offset`: whether ComfyUI's function moves a flow
      model's first sigma off 1 first (`offset_first_sigma_for_snr`: the loop applies it).
    - `family`: `"ODE"`, `"ancestral"`, `"SDE"` or `"multistep"`; `order`: its order on the ODE.
    - `fixed_grid`: steps along the given sigmas (False: ComfyUI's DPM-Solver wrappers, which
      choose their own, so `sample` only); such a sampler's `solve(ctx, x, sigmas) -> x` runs
      the whole solve (a `lax.while_loop` where it adapts its steps) and its `step` is unused.
    - `blend_before_noise`: mixing blends between denoising and re-noising (LCM's place in the
      original); otherwise after the step.
    - `steps_from_zero`: its own formula takes a step from sigma 0 (inversion's first), the
      slope there at `INVERSION_ZERO_SIGMA` (euler, heun, dpmpp_2m). For the others (whose
      formulas read `log sigma` or a midpoint) inversion's loop makes that step Euler's, leaves
      the state as `init` made it and starts the history at the next step (`Sigmas.first`).
    - `invertible`: a deterministic fixed-grid sampler whose formulas hold on an ascending
      schedule too (inversion's): False where they read the schedule's ends as a descending
      one's (heunpp2 weighs by its first sigma, 0 in inversion).
    """

    step: Callable[[Context, Array, Sigmas, Any], tuple[Array, Any]]
    init: Callable[[Context, Array], Any] = no_state
    options: tuple[tuple[str, Any], ...] = ()
    calls: int = 1
    draws: int = 0
    model_sampling: bool = False
    snr_offset: bool = False
    family: str = "ODE"
    order: int = 1
    fixed_grid: bool = True
    blend_before_noise: bool = False
    solve: Callable[[Context, Array, Array], Array] | None = None
    steps_from_zero: bool = False
    choices: tuple[tuple[str, Any], ...] = ()
    invertible: bool = True

    @property
    def noise(self) -> bool:
        """Whether the sampler asks for noise (then `sample` needs a key or `noise=`)."""
        return self.draws > 0


# --- rules the steps share ---------------------------------------------------------------------


def at_sigma(ops: Ops, sigma: Array) -> Array:
    """Where the denoiser is evaluated for a step from `sigma`: `sigma`, or the zero rule's sigma."""
    return ops.where(sigma == 0, INVERSION_ZERO_SIGMA, sigma)


def to_d(x: Array, denoised: Array, at: Array) -> Array:
    """k-diffusion's `to_d`: the ODE's slope `(x - D) / sigma`."""
    return (x - denoised) / at


def apply_noise(x: Array, scaled_noise: Array, sigma: Array, scaling: str) -> Array:
    """ComfyUI's `noise_scaling`, given `scaled_noise = sigma * eps`."""
    if scaling == "const":
        return scaled_noise + (1 - sigma) * x
    return x + scaled_noise


def ancestral_step(ops: Ops, sigma_from: Array, sigma_to: Array, eta: float) -> tuple[Array, Array]:
    """k-diffusion's `get_ancestral_step`, `(sigma_down, sigma_up)`, as its Python arithmetic gives
    them: `up` by Python's `min` (`sigma_to` where the other value is NaN: an infinite `sigma_from`,
    a flow model's sigma 1 in CFG++'s `sigma / alpha` scale), and `down` exactly 0 where `up` is
    `sigma_to` (`eta` above 1), which a fused `sigma_to^2 - up^2` would round to +-1e-8 (NaN or a
    nonzero `down` under `jit`): `down^2 = (sigma_to - up) (sigma_to + up)`."""
    if not eta:
        return sigma_to, ops.zeros_like(sigma_to)
    up = eta * ops.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2)
    up = ops.where(up < sigma_to, up, sigma_to)
    return ops.sqrt((sigma_to - up) * (sigma_to + up)), up


def half_log_snr(ctx: Context, sigma: Array) -> Array:
    """`log(alpha / sigma)`: `-log sigma`, or `log((1 - sigma) / sigma)` for flow models."""
    ops = ctx.ops
    if ctx.flow:
        return ops.log(1 - sigma) - ops.log(sigma)
    return -ops.log(sigma)


def sigma_of_half_log_snr(ctx: Context, lam: Array) -> Array:
    """The inverse of `half_log_snr`."""
    if ctx.flow:
        return ctx.ops.sigmoid(-lam)
    return ctx.ops.exp(-lam)


def option(ctx: Context, name: str) -> Any:
    """The value of the step's option `name` (filled in with its default by the caller)."""
    return ctx.options[name]
