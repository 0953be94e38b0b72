"""The one integration loop: every sampler step of `_steps.py` as a `lax.scan` over the sigmas.

It serves the three uses, as diffrax's `_integrate.py` serves every solver:

- sampling (`sample`): one pass, the last state kept;
- mixing (`iterative_mixing_sample`): a blend with the step's noised entry in each step, and
  rewind passes that run the steps again from later starts on batches noised afresh: a loop over
  the passes (not unrolled: the compile time does not grow with their number), each pass a scan
  over every step in which the steps before its start do nothing;
- inversion (`inverted_latents`): ascending sigmas, every state written in place into the
  `(n * B, ...)` trajectory, steps between equal sigmas skipped (no denoiser call).

Randomness is per item: a draw for step `i` of pass `p` and item `b` uses
`fold_in(fold_in(fold_in(fold_in(key, p), kind), i), batch_index[b])`, so an item's result
depends only on the key, its index and the settings, never on the batch it sits in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._latent_format import LatentFormat
from ._model_sampling import ModelSampling, percent_to_sigma
from ._steps import BLENDS, SAMPLER_STEPS, Context, Sigmas, item_norm, no_model_sampling

EULER = SAMPLER_STEPS["euler"].step
"""Inversion's step from sigma 0 for the samplers that cannot take one (`Sampler.steps_from_zero`)."""


class _JaxOps:
    """`_steps.Ops` for JAX arrays (inside a trace)."""

    where = staticmethod(jnp.where)
    log = staticmethod(jnp.log)
    exp = staticmethod(jnp.exp)
    expm1 = staticmethod(jnp.expm1)
    log1p = staticmethod(jnp.log1p)
    sqrt = staticmethod(jnp.sqrt)
    arccos = staticmethod(jnp.arccos)
    sin = staticmethod(jnp.sin)
    abs = staticmethod(jnp.abs)
    sigmoid = staticmethod(jax.nn.sigmoid)
    minimum = staticmethod(jnp.minimum)
    maximum = staticmethod(jnp.maximum)
    isfinite = staticmethod(jnp.isfinite)
    zeros_like = staticmethod(jnp.zeros_like)

    @staticmethod
    def choose(pred: jax.Array, if_true: Callable, if_false: Callable, operand: Any) -> Any:
        return jax.lax.cond(pred, if_true, if_false, operand)

    @staticmethod
    def scalar(value: Any, like: jax.Array) -> jax.Array:
        return jnp.asarray(value, like.dtype if jnp.issubdtype(like.dtype, jnp.floating) else jnp.float32)

    @staticmethod
    def take(table: jax.Array, i: jax.Array) -> jax.Array:
        return jax.lax.dynamic_index_in_dim(table, i, keepdims=False)

    while_loop = staticmethod(jax.lax.while_loop)

    @staticmethod
    def fori_loop(n: int, body: Callable, init: Any) -> Any:
        return jax.lax.fori_loop(0, n, lambda i, c: body(i.astype(jnp.float32), c), init)

    @staticmethod
    def flat(x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def item_sum(x: jax.Array) -> jax.Array:
        return jnp.sum(x, axis=1, keepdims=True)

    @staticmethod
    def column(w: jax.Array, batch: int) -> jax.Array:
        return jnp.broadcast_to(jnp.asarray(w, jnp.float32), (batch,)).reshape(-1, 1)

    @staticmethod
    def channel_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        axes = tuple(range(2, x.ndim))
        return jnp.mean(x, axis=axes, keepdims=True), jnp.std(x, axis=axes, keepdims=True, ddof=1)


JAX_OPS: Any = _JaxOps()  # an `_steps.Ops` (jnp's functions are typed more narrowly)


def call_denoiser(fn: str, denoiser: Callable, x: jax.Array, sigma: jax.Array) -> jax.Array:
    """`denoiser(x, sigma * ones(B))` in x's dtype (float32, or float64 with x64), checked to
    return a real array of x's shape."""
    return _checked(fn, _called(fn, denoiser, x, sigma), x)


def call_guided(fn: str, denoiser: Any, x: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A `cfg_denoiser`'s `(guided, unconditional)` predictions (one evaluation), checked."""
    out = _called(fn, denoiser.with_uncond, x, sigma)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(
            f"{fn}: the denoiser's with_uncond must return (guided, unconditional), got {type(out).__name__}"
        )
    return _checked(fn, out[0], x), _checked(fn, out[1], x)


def _called(fn: str, denoiser: Callable, x: jax.Array, sigma: jax.Array) -> Any:
    batch = x.shape[0]
    try:
        return denoiser(x, jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (batch,)))
    except (TypeError, ValueError) as err:
        if str(err).startswith(f"{fn}:"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, jax.errors.ConcretizationTypeError):
            raise ValueError(
                f"{fn}: the denoiser needs a concrete value of x or sigma, which are traced arrays "
                f"(as under jax.jit: no float(sigma), no Python branch on them; use jnp.where): {first}"
            ) from err
        raise ValueError(
            f"{fn}: the denoiser failed on x of shape {tuple(x.shape)} and sigma of shape ({batch},) "
            f"(one noise level per item, k-diffusion's convention; broadcast it as "
            f"sigma.reshape(-1, *[1] * (x.ndim - 1))): {first}"
        ) from err


def _checked(fn: str, out: Any, x: jax.Array) -> jax.Array:
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != tuple(x.shape):
        got = type(out).__name__ if shape is None else tuple(shape)
        raise ValueError(
            f"{fn}: denoiser must return an array of the latent's shape {tuple(x.shape)}, got {got}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{fn}: denoiser must return a real floating array, got dtype {out.dtype}")
    return jnp.asarray(out).astype(x.dtype)


def item_normal(key: jax.Array, item_ids: jax.Array, item_shape: tuple[int, ...]) -> jax.Array:
    """Standard normal noise of each item, `(len(item_ids), *item_shape)`, from `fold_in(key, id)`."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), item_shape, jnp.float32))(
        item_ids
    )


class Noise(NamedTuple):
    """Where the randomness comes from.

    - `fn`: the caller's `noise(sigma, sigma_next)` (k-diffusion's `noise_sampler`), used for
      every draw of the sampler's steps; or
    - `key` (with `item_ids`): draws per pass, kind, step, call and item (see the module
      docstring); or
    - tables of given standard normal draws (the original's torch draws): `rewind`
      `(passes, steps + 1, B, ...)` and `steps` `(passes, steps, calls, B, ...)`, each None where
      not needed.
    """

    key: jax.Array | None = None
    item_ids: jax.Array | None = None
    rewind: jax.Array | None = None
    steps: jax.Array | None = None
    fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    def draw(self, kind: int, p: jax.Array, i: jax.Array, like: jax.Array, call: int = 0) -> jax.Array:
        table = self.rewind if kind == 0 else self.steps
        if table is not None:
            row = jax.lax.dynamic_index_in_dim(
                jax.lax.dynamic_index_in_dim(table, p, keepdims=False), i, keepdims=False
            )
            return row if kind == 0 else row[call]
        if self.key is None or self.item_ids is None:
            # No source: the callers require one whenever a step's draw is taken (`draws_noise`),
            # so this draw is only traced, in a branch never taken (LCM's re-noising after a
            # step that ends at sigma 0, as in a one-step LCM).
            return jnp.zeros_like(like)
        k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(self.key, p), kind), i)
        if call:  # a step's first draw keeps the bits it had before steps drew several
            k = jax.random.fold_in(k, call)
        return item_normal(k, self.item_ids, like.shape[1:])


def call_noise(fn: str, noise: Callable, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """The caller's `noise(sigma, sigma_next)`, checked to return a real array of x's shape."""
    out = noise(sigma, sigma_next)
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != tuple(x.shape):
        got = type(out).__name__ if shape is None else tuple(shape)
        raise ValueError(
            f"{fn}: noise(sigma, sigma_next) must return standard normal noise of the latent's shape "
            f"{tuple(x.shape)}, got {got}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{fn}: noise(sigma, sigma_next) must return a real floating array, got {out.dtype}")
    return jnp.asarray(out).astype(x.dtype)


class Run(NamedTuple):
    """A loop's settings (static)."""

    fn: str
    sampler: str
    noise_scaling: str = "eps"
    blend: str | None = None  # a name of BLENDING_FUNCTIONS: mixing
    passes: int = 1  # mixing's rewind passes (their first steps are the kernel's `starts`)
    save_all: bool = False  # keep every state (inversion) rather than the last
    skip_equal: bool = False  # a step between equal sigmas calls no denoiser
    zero_rule: bool = False  # inversion: a step from sigma 0 (see `Sampler.steps_from_zero`)
    latent_format: LatentFormat | None = None
    options: tuple[tuple[str, Any], ...] = ()  # the sampler's options, defaults filled in


def _steps(sigmas: jax.Array, start: jax.Array | int) -> Sigmas:
    n = sigmas.shape[0] - 1
    i = jnp.arange(n)
    prev = jnp.concatenate([sigmas[:1], sigmas[:-2]])
    return Sigmas(i, prev, sigmas[:-1], sigmas[1:], i == start, jnp.zeros((n,)))


def offset_first_sigma(run: Run, sigmas: jax.Array, first_sigma: jax.Array | None) -> jax.Array:
    """ComfyUI's `offset_first_sigma_for_snr` for the samplers that read the model sampling: a
    flow model's first sigma at or above 1 (infinite log-SNR) moved to `first_sigma`
    (`model_sampling.percent_to_sigma(1e-4)`)."""
    if not SAMPLER_STEPS[run.sampler].snr_offset or run.noise_scaling != "const" or first_sigma is None:
        return sigmas
    return sigmas.at[0].set(jnp.where(sigmas[0] >= 1, first_sigma, sigmas[0]))


def integrate(
    run: Run,
    denoiser: Callable,
    x0: jax.Array,
    sigmas: jax.Array,
    *,
    noised: jax.Array | None = None,
    c1: jax.Array | None = None,
    noise: Noise | None = None,
    starts: jax.Array | None = None,
    out_dtype: Any = jnp.float32,
    first_sigma: jax.Array | None = None,
    model_sampling: ModelSampling | None = None,
) -> jax.Array:
    """Run `run.sampler` along `sigmas` from `x0` (`(B, ...)`, float32, in the latent's space).

    Mixing (`run.blend`): `noised` is the `(len(sigmas) * B, ...)` batch along `sigmas`
    (step-major) in the latent's space, `c1` the `(steps,)` weights; a pass starts from its own
    first entry (`x0` is then unused by pass 0); `starts` holds the `run.passes` passes' first
    steps (traced: other rewind settings with as many passes reuse the program). Returns the
    last state, or with `save_all` the `(len(sigmas) * B, ...)` trajectory whose entry 0 is
    `x0`, in `out_dtype`. `first_sigma`: see `offset_first_sigma`. `model_sampling`: what
    `Context.percent_sigma` reads.
    """
    noise = Noise() if noise is None else noise
    spec = SAMPLER_STEPS[run.sampler]
    options = dict(run.options)
    fmt = run.latent_format
    batch = x0.shape[0]
    to_model = (lambda v: v) if fmt is None else fmt.process_in
    to_latent = (lambda v: v) if fmt is None else fmt.process_out
    den = lambda x, s: call_denoiser(run.fn, denoiser, x, s)  # noqa: E731
    guided = None
    if callable(getattr(denoiser, "with_uncond", None)):  # a cfg_denoiser (the CFG++ samplers)
        guided = lambda x, s: call_guided(run.fn, denoiser, x, s)  # noqa: E731
    percent_sigma = (
        no_model_sampling(run.fn, run.sampler)
        if model_sampling is None
        else functools.partial(percent_to_sigma, model_sampling)
    )
    step_sigmas = offset_first_sigma(run, sigmas, first_sigma)
    n_steps = sigmas.shape[0] - 1
    mixing = run.blend is not None
    blend_fn = BLENDS[run.blend] if run.blend is not None else None

    # The norms of the given noised entries do not depend on the path: one pass over the batch
    # before the loop (slerp and norm_only), not a reduction over z'[i] in every step.
    norms = None
    if mixing and run.blend != "addition" and fmt is None:
        assert noised is not None
        norms = _norms(noised)

    def entry(p: jax.Array, i: jax.Array, base: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """The step's noised entry in model space, and its per-item norms where known: pass 0
        reads the given batch in place (no copy), a rewind pass noises its base afresh."""
        assert noised is not None
        given = to_model(jax.lax.dynamic_slice_in_dim(noised, i * batch, batch))
        norm = None if norms is None else jax.lax.dynamic_slice_in_dim(norms, i * batch, batch)
        if run.passes == 1:
            return given, norm
        fresh = base + noise.draw(0, p, i, base) * sigmas[i]
        return jnp.where(p == 0, given, fresh), (
            None if norm is None else jnp.where(p == 0, norm, _norms(fresh))
        )

    def context(p: jax.Array, i: jax.Array, x: jax.Array, blend: Callable) -> Context:
        calls = iter(range(1 << 30))  # the step's draws, in the order it asks for them

        def draw(sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
            if noise.fn is not None:
                return call_noise(run.fn, noise.fn, x, sigma, sigma_next)
            return noise.draw(1, p, i, x, next(calls))

        return Context(JAX_OPS, den, blend, draw, run.noise_scaling, options, guided, percent_sigma)

    from_zero = run.zero_rule and not spec.steps_from_zero

    def one_step(p, x, state, base, out, s: Sigmas, w):
        if from_zero:  # the step after a step from sigma 0 starts the history
            s = s._replace(first=s.first | (s.prev == 0))
        z, z_norm = entry(p, s.i, base) if mixing else (None, None)
        if z is not None and run.passes > 1:
            x = jnp.where(s.first, z, x)  # a pass starts at its own first entry
        blend = (lambda v: v) if blend_fn is None else (lambda v: blend_fn(JAX_OPS, z, v, w, z_norm))
        ctx = context(p, s.i, x, blend)
        if run.passes > 1:  # a rewind pass starts afresh: no history from the pass before
            fresh = spec.init(ctx, x)
            state = jax.tree.map(lambda a, b: jnp.where(s.first, a, b), fresh, state)

        def advance(operand):
            x, state = operand
            if from_zero:
                return jax.lax.cond(
                    s.sigma == 0, lambda o: EULER(ctx, *o), lambda o: spec.step(ctx, *o), (x, s, state)
                )
            return spec.step(ctx, x, s, state)

        if run.skip_equal:
            x, state = jax.lax.cond(s.next == s.sigma, lambda o: o, advance, (x, state))
        else:
            x, state = advance((x, state))
        if out is not None:
            out = jax.lax.dynamic_update_slice_in_dim(
                out, to_latent(x).astype(out.dtype), (s.i + 1) * batch, 0
            )
        return x, state, out

    out0 = None
    if run.save_all:
        out0 = jnp.zeros((sigmas.shape[0] * batch, *x0.shape[1:]), out_dtype)
        out0 = jax.lax.dynamic_update_slice_in_dim(out0, x0.astype(out_dtype), 0, 0)  # the latent itself
    w_all = c1 if c1 is not None else jnp.zeros((n_steps,), jnp.float32)
    if n_steps == 0:
        return out0 if out0 is not None else x0
    if spec.solve is not None:  # a sampler that chooses its own steps: `sample` only
        assert not mixing and not run.save_all
        x = to_model(x0)
        return to_latent(spec.solve(context(jnp.int32(0), jnp.int32(0), x, lambda v: v), x, step_sigmas))

    def one_pass(p: jax.Array, start: jax.Array, x: jax.Array, out: jax.Array | None):
        steps = _steps(step_sigmas, start)
        base = x
        if mixing and run.passes == 1:
            x = entry(p, jnp.int32(0), base)[0]
        state = spec.init(context(p, jnp.int32(0), x, lambda v: v), x)

        def body(carry, inp):
            x, state, out = carry
            s, w = inp
            s = s._replace(all=step_sigmas)
            if run.passes == 1:
                x, state, out = one_step(p, x, state, base, out, s, w)
                return (x, state, out), None

            def active(operand):
                x, state, out = operand
                return one_step(p, x, state, base, out, s, w)

            return jax.lax.cond(s.i >= start, active, lambda o: o, (x, state, out)), None

        (x, _, out), _ = jax.lax.scan(body, (x, state, out), (steps, w_all))
        return x, out

    if run.passes == 1:
        x, out = one_pass(jnp.int32(0), jnp.int32(0), to_model(x0), out0)
    else:

        def pass_body(carry, inp):
            x, out = carry
            p, start = inp
            return one_pass(p, start, x, out), None

        assert starts is not None and starts.shape == (run.passes,)
        xs = (jnp.arange(run.passes, dtype=jnp.int32), starts.astype(jnp.int32))
        (x, out), _ = jax.lax.scan(pass_body, (to_model(x0), out0), xs)
    if out is not None:
        return out
    return to_latent(x)


def _norms(x: jax.Array) -> jax.Array:
    return item_norm(JAX_OPS, JAX_OPS.flat(x))


__all__ = [
    "JAX_OPS",
    "Noise",
    "Run",
    "call_denoiser",
    "call_guided",
    "call_noise",
    "integrate",
    "item_normal",
]
