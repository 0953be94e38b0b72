"""The noise kernels: per-step draws, the Markov chain's arithmetic and the jitted scans.

The noise of (step `i`, item `b`) is drawn from `fold_in(fold_in(key, i), b)`: it depends on
the key, the step and the item and on nothing else, so a prefix of the sigmas gives a prefix
of the batch, and a run split into chunks of steps or over devices gives the same bits.
The entry points that check arguments and call these are in `_noise`; the mesh in `_sharding`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._latent_format import LatentFormat
from ._steps import apply_noise

KERNEL_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
"""XLA options of the noise kernels: LLVM's level 1 instead of 2 compiles the SDXL 1000-step
kernel in about a quarter of the time (2.3 s -> 0.6 s on the project's CPU) and runs it as fast;
every pinned hash is unchanged (tests/test_noise_pinned.py). Not for `normalize`'s mean: there
level 1 sums in another order and changes the pinned bytes."""

try:  # JAX accepts compiler options only on a jit called outside any trace
    from jax._src.core import trace_state_clean as _outside_any_trace
except ImportError:  # pragma: no cover  (a JAX without it: always the plain jit, same bits)

    def _outside_any_trace() -> bool:
        return False


class _Kernel:
    """A jitted kernel compiled with `KERNEL_COMPILER_OPTIONS` when called outside any trace, and
    as a plain nested jit (part of the caller's program) inside one, e.g. under a user's `jit`."""

    def __init__(self, fn: Callable[..., Any], static_argnames: tuple[str, ...]) -> None:
        self._fast = jax.jit(fn, static_argnames=static_argnames, compiler_options=KERNEL_COMPILER_OPTIONS)
        self._plain = jax.jit(fn, static_argnames=static_argnames)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (self._fast if _outside_any_trace() else self._plain)(*args, **kwargs)

    def _cache_size(self) -> int:
        return self._fast._cache_size()  # type: ignore[attr-defined]


def _kernel(*static_argnames: str) -> Callable[[Callable[..., Any]], _Kernel]:
    return lambda fn: _Kernel(fn, static_argnames)


class _Statics(NamedTuple):
    """The settings compiled into the kernels (static arguments of their jits)."""

    coupling: str
    scaling: str
    latent_format: LatentFormat | None
    out_dtype: Any  # the latent's dtype, the output's


def step_noise(
    key: jax.Array, step: ArrayLike, item_ids: jax.Array, item_shape: tuple[int, ...]
) -> jax.Array:
    """Standard normal noise of every item at one step: shape `(len(item_ids), *item_shape)`."""
    step_key = jax.random.fold_in(key, step)

    def one(item):
        return jax.random.normal(jax.random.fold_in(step_key, item), item_shape, jnp.float32)

    return jax.vmap(one)(item_ids)


def markov_start(batch: int, item_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The Markov chain's state before its first step: sigma 0, no accumulated noise.

    Made in NumPy and put on the device: `jnp.zeros` would compile a program per shape.
    """
    return jax.device_put(np.zeros((), np.float32)), jax.device_put(
        np.zeros((batch, *item_shape), np.float32)
    )


def markov_gaps(sigmas: jax.Array, prev_sigma: ArrayLike) -> jax.Array:
    """Per step, the noise scale that takes the previous level to this one: sqrt(s_i^2 - s_{i-1}^2).

    NaN where the level falls (`s_i < s_{i-1}`): noise cannot be taken away, and traced sigmas
    cannot be checked up front, so a descending schedule under `jit` gives NaN entries from the
    first descent on rather than silently wrong statistics.
    """
    prev = jnp.concatenate([jnp.reshape(prev_sigma, (1,)), sigmas[:-1]])
    # (s - p)(s + p) rather than s*s - p*p: no multiply feeds an add, so XLA has no FMA to form
    # and every program (chunked, sharded) rounds the same way.
    gap = jnp.sqrt(jnp.maximum((sigmas - prev) * (sigmas + prev), 0.0))
    return jnp.where(sigmas >= prev, gap, jnp.nan)


def _to_model(x: jax.Array, latent_format: LatentFormat | None) -> jax.Array:
    return x if latent_format is None else latent_format.process_in(x)


def _from_model(z: jax.Array, latent_format: LatentFormat | None) -> jax.Array:
    return z if latent_format is None else latent_format.process_out(z)


def _local_scan(
    key: jax.Array,
    x: jax.Array,
    sigmas: jax.Array,
    gaps: jax.Array,
    step_ids: jax.Array,
    item_ids: jax.Array,
    offset: jax.Array,
    acc: jax.Array,
    statics: _Statics,
    emit: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Scan over some steps; returns their `(steps, B, *item)` latents and the Markov sum.

    `acc` is the accumulated Markov noise before the first of these steps (unused by the other
    couplings); with `emit=False` only the final sum is computed.

    Bit-exactness across chunkings and devices: XLA may contract a multiply and an add into one
    FMA, and decides per program, so every caller runs at least two steps here (a one-step
    scan is inlined into its caller and fused differently) and `markov_gaps` avoids the
    pattern altogether.
    """
    coupling, scaling, latent_format, out_dtype = statics
    item_shape = x.shape[1:]
    x_model = _to_model(x, latent_format)

    def emit_z(scaled, sigma):
        z = _from_model(apply_noise(x_model, scaled, sigma, scaling), latent_format) - offset
        return z.astype(out_dtype)

    if coupling == "markov":

        def accumulate(acc, inp):
            step_id, sigma, gap = inp
            acc = acc + gap * step_noise(key, step_id, item_ids, item_shape)
            return acc, (emit_z(acc, sigma) if emit else None)

        z, acc = jax.lax.scan(accumulate, acc, (step_ids, sigmas, gaps))[::-1]
        return z, acc

    if coupling == "independent" and step_ids.shape[0] >= 2 * STEPS_PER_BLOCK:
        z = _independent_blocks(key, sigmas, step_ids, item_ids, item_shape, emit_z, out_dtype)
        return z, acc

    shared = step_noise(key, 0, item_ids, item_shape) if coupling == "shared" else None

    def step(_, inp):
        step_id, sigma = inp
        eps = shared if coupling == "shared" else step_noise(key, step_id, item_ids, item_shape)
        return None, emit_z(sigma * eps, sigma)

    _, z = jax.lax.scan(step, None, (step_ids, sigmas))
    return z, acc


STEPS_PER_BLOCK: int = 4
"""Steps whose noise is drawn together (one `vmap`) per loop iteration of the independent
coupling: about 1.2x the throughput of one step per iteration on a CPU core (measured, issue 11)."""


def _independent_blocks(
    key: jax.Array,
    sigmas: jax.Array,
    step_ids: jax.Array,
    item_ids: jax.Array,
    item_shape: tuple[int, ...],
    emit_z: Callable[[jax.Array, jax.Array], jax.Array],
    out_dtype: jnp.dtype,
) -> jax.Array:
    """The independent coupling's `(steps, B, *item)` latents, `STEPS_PER_BLOCK` steps at a time.

    Each iteration writes its block in place into the output. When the steps do not divide into
    blocks, the last block starts `STEPS_PER_BLOCK` steps before the end and rewrites a few steps
    with the same values (same step ids, same program), so no padding is ever sliced off (a copy).
    """
    k, n, batch = STEPS_PER_BLOCK, step_ids.shape[0], item_ids.shape[0]
    starts = np.minimum(np.arange(0, n, k), n - k).astype(np.int32)

    def draw(step_id: jax.Array, sigma: jax.Array) -> jax.Array:
        return emit_z(sigma * step_noise(key, step_id, item_ids, item_shape), sigma)

    def block(out: jax.Array, start: jax.Array) -> tuple[jax.Array, None]:
        ids = jax.lax.dynamic_slice_in_dim(step_ids, start, k)
        sig = jax.lax.dynamic_slice_in_dim(sigmas, start, k)
        z = jax.vmap(draw)(ids, sig)
        return jax.lax.dynamic_update_slice_in_dim(out, z, start, 0), None

    out = jnp.empty((n, batch, *item_shape), out_dtype)
    return jax.lax.scan(block, out, jnp.asarray(starts))[0]


@_kernel("statics")
def _noised_scan(
    key: jax.Array,
    x: jax.Array,
    sigmas: jax.Array,
    step_ids: jax.Array,
    item_ids: jax.Array,
    offset: jax.Array,
    carry: tuple[jax.Array, jax.Array],
    *,
    statics: _Statics,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One device: the `(len(sigmas) * B, *item)` noised latents and the Markov state after them."""
    prev_sigma, acc = carry
    gaps = markov_gaps(sigmas, prev_sigma)
    z, acc = _local_scan(key, x, sigmas, gaps, step_ids, item_ids, offset, acc, statics)
    # Flattened here, inside the jit, where it is free; outside it would copy the whole batch.
    return z.reshape((-1, *x.shape[1:])), (sigmas[-1], acc)


def _entry_mean(
    x0: jax.Array, eps0: jax.Array, sigma0: jax.Array, scaling: str, latent_format: LatentFormat | None
) -> jax.Array:
    """Mean of one noised entry: the scalar `normalize` subtracts, for the batch's first entry.

    The first step draws the same noise in every coupling, so this needs no coupling.
    """
    z0 = apply_noise(_to_model(x0[None], latent_format), sigma0 * eps0[None], sigma0, scaling)
    return jnp.mean(_from_model(z0, latent_format))


@functools.partial(jax.jit, static_argnames=("statics",))  # level 1 would sum in another order
def _first_entry_mean(
    key: jax.Array, x: jax.Array, sigma0: jax.Array, step0: jax.Array, item0: jax.Array, *, statics: _Statics
) -> jax.Array:
    """`_entry_mean` of the first step's first item, its noise drawn from the key."""
    scaling, latent_format = statics.scaling, statics.latent_format
    eps = step_noise(key, step0, item0[None], x.shape[1:])[0]
    return _entry_mean(x[0], eps, sigma0, scaling, latent_format)


@functools.partial(jax.jit, static_argnames=("statics", "normalize"))
def _from_noise(
    latent: jax.Array, sigmas: jax.Array, noise: jax.Array, *, statics: _Statics, normalize: bool
) -> jax.Array:
    """The batch from given noise in one pass: reshapes, casts and `normalize` happen inside."""
    coupling, scaling, latent_format, out_dtype = statics
    x = latent.astype(jnp.float32)
    n, batch, item = sigmas.shape[0], x.shape[0], x.shape[1:]
    noise = noise.reshape((n, batch, *item))
    x_model = _to_model(x, latent_format)
    gaps = markov_gaps(sigmas, jnp.zeros((), jnp.float32))
    offset = jnp.zeros((), jnp.float32)
    if normalize:
        offset = _entry_mean(x[0], noise[0, 0].astype(jnp.float32), sigmas[0], scaling, latent_format)

    def finish(x_model, scaled, sigma):
        z = _from_model(apply_noise(x_model, scaled, sigma, scaling), latent_format) - offset
        return z.astype(out_dtype)

    if coupling != "markov":  # one fused elementwise pass over the whole batch, no loop
        eps = jnp.broadcast_to(noise[:1], noise.shape) if coupling == "shared" else noise
        flat = (n * batch, *item)
        per_entry = jnp.repeat(sigmas, batch).reshape((n * batch,) + (1,) * len(item))
        tiled = jnp.broadcast_to(x_model[None], (n, batch, *item)).reshape(flat)
        return finish(tiled, per_entry * eps.reshape(flat).astype(jnp.float32), per_entry)

    def step(acc, inp):
        sigma, gap, eps = inp
        acc = acc + gap * eps.astype(jnp.float32)
        return acc, finish(x_model, acc, sigma)

    _, z = jax.lax.scan(step, jnp.zeros_like(x), (sigmas, gaps, noise))
    return z.reshape((n * batch, *item))
