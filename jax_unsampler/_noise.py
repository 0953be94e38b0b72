"""The noised batch: `z[i*B + b] = x[b] + sigma_i * eps[i, b]`, built with `lax.scan`.

The noise of (step `i`, item `b`) is drawn from `fold_in(fold_in(key, i), b)`: it depends on
the key, the step and the item and on nothing else, so a prefix of the sigmas gives a prefix
of the batch, and a run split into chunks of steps (pass `step_offset`) or over devices gives
the same bits as one run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._keys import canonical_key
from ._latent_format import LatentFormat
from ._names import COUPLINGS, ITEM_ID_MAX, NOISE_SCALINGS
from ._validation import check_choice, check_int

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


def _is_concrete(x: object) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _holds(predicate: Callable[[jax.Array], jax.Array], x: jax.Array) -> bool:
    """`predicate(x)` for a concrete `x`, evaluated now even while a caller's `jax.jit` traces.

    An array captured from a closure is concrete, but operations on it inside a trace are
    staged; evaluating the check eagerly keeps `bool()` from meeting a tracer.
    """
    with jax.ensure_compile_time_eval():
        return bool(predicate(x))


def check_latent(fn: str, latent: ArrayLike) -> jax.Array:
    """Shape and dtype checks always; the finiteness check only where the latent is concrete."""
    if latent is None:
        raise ValueError(
            f"{fn}: latent is required: pass a (B, C, ...) array, e.g. jnp.zeros((1, 4, 64, 64))"
        )
    latent = latent if isinstance(latent, jax.Array) else jnp.asarray(latent)
    if latent.ndim < 2:
        raise ValueError(
            f"{fn}: latent must have a batch axis and at least one more (rank >= 2), "
            f"got shape {tuple(latent.shape)}"
        )
    if not jnp.issubdtype(latent.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: latent must be floating point (float32, float16 or bfloat16), got {latent.dtype}"
        )
    if _is_concrete(latent) and not _holds(lambda v: jnp.all(jnp.isfinite(v)), latent):
        raise ValueError(f"{fn}: latent contains NaN or infinite values")
    return latent


def check_sigmas(fn: str, sigmas: ArrayLike) -> jax.Array:
    if not isinstance(sigmas, jax.Array):
        sigmas = jnp.asarray(sigmas, None if hasattr(sigmas, "dtype") else jnp.float32)
    if sigmas.ndim != 1:
        raise ValueError(f"{fn}: sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    if not jnp.issubdtype(sigmas.dtype, jnp.floating):
        raise ValueError(f"{fn}: sigmas must be floating point, got {sigmas.dtype}")
    if _is_concrete(sigmas) and not _holds(lambda v: jnp.all(jnp.isfinite(v)), sigmas):
        raise ValueError(f"{fn}: sigmas contain NaN or infinite values")
    return sigmas


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


def apply_noise(x: jax.Array, scaled_noise: jax.Array, sigma: ArrayLike, scaling: str) -> jax.Array:
    """ComfyUI's `noise_scaling`, given `scaled_noise = sigma * eps`."""
    if scaling == "const":
        return scaled_noise + (1 - sigma) * x
    return x + scaled_noise


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


@_kernel("statics", "mesh")
def _noised_sharded(
    key: jax.Array,
    x: jax.Array,
    sigmas: jax.Array,
    item_ids: jax.Array,
    offset: jax.Array,
    first_step: jax.Array,
    *,
    statics: _Statics,
    mesh: jax.sharding.Mesh,
) -> jax.Array:
    """Steps spread over a one-axis mesh; the result is sharded along its leading axis.

    Each device runs `_local_scan` on a contiguous block of steps with the global step ids, so
    every bit equals the one-device result. A Markov chain is sequential: its running sum is
    handed from device to device over `ndev - 1` rounds, each device rescanning its block
    (same arithmetic, so still exact), which costs `ndev` times the noise generation.
    """
    (axis,) = mesh.axis_names
    ndev = mesh.shape[axis]
    n = sigmas.shape[0]
    per = max(-(-n // ndev), 2)  # a one-step scan is inlined and fused differently
    padded = jnp.concatenate([sigmas, jnp.broadcast_to(sigmas[-1:], (per * ndev - n,))])
    gaps = markov_gaps(padded, jnp.zeros((), jnp.float32))
    coupling = statics.coupling
    spec = jax.sharding.PartitionSpec
    split = jax.sharding.NamedSharding(mesh, spec(axis))
    padded, gaps = (jax.lax.with_sharding_constraint(v, split) for v in (padded, gaps))

    def block(sig, gap, key, x, item_ids, offset, first_step):
        d = jax.lax.axis_index(axis)
        step_ids = first_step + (d * per).astype(jnp.uint32) + jnp.arange(per, dtype=jnp.uint32)
        acc = jnp.zeros((x.shape[0], *x.shape[1:]), jnp.float32)
        if coupling == "markov":
            for _ in range(ndev - 1):
                _, total = _local_scan(key, x, sig, gap, step_ids, item_ids, offset, acc, statics, emit=False)
                incoming = jax.lax.ppermute(total, axis, [(j, j + 1) for j in range(ndev - 1)])
                acc = jnp.where(d == 0, jnp.zeros_like(acc), incoming)
        z, _ = _local_scan(key, x, sig, gap, step_ids, item_ids, offset, acc, statics)
        return z

    z = jax.shard_map(
        block,
        mesh=mesh,
        in_specs=(spec(axis), spec(axis), spec(), spec(), spec(), spec(), spec()),
        out_specs=spec(axis),
        check_vma=False,
    )(padded, gaps, key, x, item_ids, offset, first_step)
    z = z[:n].reshape((n * x.shape[0], *x.shape[1:]))
    return jax.lax.with_sharding_constraint(z, split)


def _auto_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The same devices and axis with automatic sharding, so an uneven last block can be sliced
    off (explicit axes cannot express uneven shards)."""
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,))


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


def _out_of_uint32(ids: jax.Array) -> jax.Array:
    """Whether any integer id is negative or (for 64-bit ids) above `ITEM_ID_MAX`."""
    bad = jnp.any(ids < 0)
    return bad | jnp.any(ids > ITEM_ID_MAX) if ids.dtype.itemsize > 4 else bad


def _range_error(fn: str, ids: np.ndarray) -> ValueError:
    return ValueError(
        f"{fn}: batch_index entries must be in [0, {ITEM_ID_MAX}] (2**32 - 1), got {ids.tolist()}"
    )


def _item_ids(fn: str, batch_index: ArrayLike | None, batch: int) -> jax.Array:
    """`batch_index` as uint32 item ids, refusing what uint32 would wrap (checked where concrete)."""
    if batch_index is None:
        return jax.device_put(np.arange(batch, dtype=np.uint32))  # jnp.arange compiles per length
    if not isinstance(batch_index, jax.Array):
        # Before any conversion: with 64-bit mode off, jnp.asarray would wrap int64 values itself.
        try:
            host = np.asarray(batch_index)
        except (TypeError, ValueError, OverflowError):
            host = np.asarray(None)
        if host.shape != (batch,) or not np.issubdtype(host.dtype, np.integer):
            raise ValueError(
                f"{fn}: batch_index must be {batch} integers (one per latent), got "
                f"{host.dtype if host.dtype != object else type(batch_index).__name__} of shape {host.shape}"
            )
        if host.size and (host.min() < 0 or host.max() > ITEM_ID_MAX):
            raise _range_error(fn, host)
        return jnp.asarray(host.astype(np.uint32))
    ids = batch_index
    if ids.shape != (batch,) or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: batch_index must be {batch} integers (one per latent), got "
            f"{ids.dtype} of shape {tuple(ids.shape)}"
        )
    if _is_concrete(ids) and _holds(_out_of_uint32, ids):
        raise _range_error(fn, np.asarray(ids))
    return ids.astype(jnp.uint32)


def _check_mesh(fn: str, mesh: object) -> None:
    if not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"{fn}: mesh must have exactly one axis (the steps are spread over it), "
            f"got axes {mesh.axis_names}"
        )


class _Checked(NamedTuple):
    """The arguments every public entry shares, validated and canonical."""

    latent: jax.Array  # as given (its dtype is the output's)
    x: jax.Array  # the latent in float32
    sigmas: jax.Array  # float32
    normalize: bool
    statics: _Statics


def _check_common(
    fn: str,
    latent: ArrayLike,
    sigmas: ArrayLike,
    normalize: object,
    coupling: object,
    noise_scaling: object,
    latent_format: object,
) -> _Checked:
    """The one validation path of `noised_latents`, its chunked variant and `..._from_noise`."""
    latent = check_latent(fn, latent)
    sigmas = check_sigmas(fn, sigmas)
    coupling = check_choice(fn, "coupling", coupling, COUPLINGS)
    scaling = check_choice(fn, "noise_scaling", noise_scaling, NOISE_SCALINGS)
    if coupling == "markov" and _is_concrete(sigmas) and _holds(_descends, sigmas):
        raise ValueError(f"{fn}: coupling='markov' needs ascending non-negative sigmas (least noise first)")
    if not isinstance(normalize, (bool, np.bool_)):
        raise ValueError(f"{fn}: normalize must be True or False, got {normalize!r}")
    if latent_format is not None and not isinstance(latent_format, LatentFormat):
        raise ValueError(
            f"{fn}: latent_format must be a LatentFormat (e.g. preset(name).latent_format), "
            f"got {type(latent_format).__name__}"
        )
    statics = _Statics(coupling, scaling, latent_format, latent.dtype)
    return _Checked(latent, latent.astype(jnp.float32), sigmas.astype(jnp.float32), bool(normalize), statics)


def _descends(sigmas: jax.Array) -> jax.Array:
    """Whether a Markov chain from 0 along `sigmas` ever falls (see `markov_gaps`)."""
    return jnp.any(jnp.diff(sigmas, prepend=jnp.zeros((1,), sigmas.dtype)) < 0)


class _Plan:
    """A checked `noised_latents` call: the shared arguments plus key, items and first step."""

    def __init__(
        self,
        fn: str,
        key: ArrayLike,
        latent: ArrayLike,
        sigmas: ArrayLike,
        normalize: object,
        coupling: object,
        batch_index: ArrayLike | None,
        step_offset: object,
        noise_scaling: object,
        latent_format: object,
    ) -> None:
        self.key = canonical_key(fn, key)
        checked = _check_common(fn, latent, sigmas, normalize, coupling, noise_scaling, latent_format)
        self.latent, self.x, self.sigmas, self.normalize, self.statics = checked
        # Step ids are uint32: the last one, step_offset + len(sigmas) - 1, must not wrap.
        last = ITEM_ID_MAX + 1 - max(int(self.sigmas.shape[0]), 1)
        self.step_offset = check_int(fn, "step_offset (step ids are uint32)", step_offset, 0, last)
        self.item_ids = _item_ids(fn, batch_index, self.latent.shape[0])

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.latent.shape[1:])

    def offset(self) -> jax.Array:
        if not self.normalize or self.sigmas.shape[0] == 0:
            return jax.device_put(np.zeros((), np.float32))
        step0, item0 = jnp.uint32(self.step_offset), self.item_ids[0]
        return _first_entry_mean(self.key, self.x, self.sigmas[0], step0, item0, statics=self.statics)

    def start(self) -> tuple[jax.Array, jax.Array]:
        return markov_start(self.latent.shape[0], self.item_shape)

    def run(
        self, sigmas: jax.Array, first_step: int, offset: jax.Array, carry: tuple[jax.Array, jax.Array]
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        n = sigmas.shape[0]
        if n == 1:  # see _local_scan: never a one-step scan; the repeated sigma adds no noise
            sigmas = jnp.concatenate([sigmas, sigmas])
        # NumPy: jnp.arange and the add would compile a program per length.
        step_ids = np.arange(sigmas.shape[0], dtype=np.uint32) + np.uint32(first_step)
        z, carry = _noised_scan(
            self.key, self.x, sigmas, step_ids, self.item_ids, offset, carry, statics=self.statics
        )
        return (z if sigmas.shape[0] == n else z[: n * self.latent.shape[0]]), carry

    def run_sharded(
        self, mesh: jax.sharding.Mesh, sigmas: jax.Array, first_step: int, offset: jax.Array
    ) -> jax.Array:
        # The first step is traced (a uint32 argument): chunks at other offsets share one program.
        return _noised_sharded(
            self.key, self.x, sigmas, self.item_ids, offset, np.uint32(first_step),
            statics=self.statics, mesh=_auto_mesh(mesh),
        )  # fmt: skip


def noised_latents(
    key: ArrayLike,
    latent: ArrayLike,
    sigmas: ArrayLike,
    *,
    normalize: bool = False,
    coupling: str = "independent",
    batch_index: ArrayLike | None = None,
    step_offset: int = 0,
    noise_scaling: str = "eps",
    latent_format: LatentFormat | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """The node's noised batch for a latent of any batch size and rank.

    `z[i*B + b] = x[b] + sigmas[i] * eps[i, b]`, step-major, each `eps` standard normal with
    `x[b]`'s shape, drawn from `fold_in(fold_in(key, step_offset + i), batch_index[b])`.

    **Arguments:**

    - `key`: a PRNG key (`jax.random.key(seed)`, or a legacy `jax.random.PRNGKey(seed)`).
    - `latent`: `(B, ...)`, rank 2 or more (4-D images, 5-D video, 3-D audio); float32, float16
      or bfloat16 (half precision is computed in float32 and rounded once).
    - `sigmas`: 1-D, the noise level of each step (e.g. from `unsampler_sigmas`).
    - `normalize`: subtract one scalar, the mean of the batch's first entry, from every entry
      (the node's `normalize`).
    - `coupling`: `"independent"` (the node: fresh noise at every step), `"shared"` (one noise
      per item for all steps) or `"markov"` (each step adds the noise that takes the previous
      level to the next, like the forward diffusion process; sigmas must ascend from 0 or
      above: checked up front when `sigmas` is concrete, and when it is traced (an argument
      of your `jax.jit`) the entries from the first descending step on are NaN). Every
      coupling gives each entry the same distribution; they differ in how entries correlate.
    - `batch_index`: optional `B` ints in [0, 2**32 - 1] naming each item's noise stream
      (ComfyUI's LATENT `batch_index`); default `0..B-1`. Larger values are refused, not wrapped.
    - `step_offset`: the global index of `sigmas[0]`, for runs split into chunks of steps;
      step ids are uint32, so `step_offset + len(sigmas)` must not exceed 2**32.
    - `noise_scaling`: `"eps"` (the node: `x + sigma*eps`) or `"const"`
      (`sigma*eps + (1 - sigma)*x`, rectified-flow models).
    - `latent_format`: a `LatentFormat`; when given, the noise is applied in the model's space
      (`process_out(noise_scaling(process_in(x)))`), as ComfyUI feeds the model.
    - `mesh`: a one-axis `jax.sharding.Mesh`: the steps are spread over its devices in
      contiguous blocks and the result is a global array sharded along the batch axis, with the
      same bits as on one device. With `coupling="markov"` the running sum is passed from
      device to device, so each device generates its noise `ndev` times (exact, not faster).

    **Returns:** an array of shape `(len(sigmas) * B, *latent.shape[1:])` and the latent's dtype.
    """
    fn = "noised_latents"
    plan = _Plan(
        fn, key, latent, sigmas, normalize, coupling, batch_index, step_offset, noise_scaling, latent_format
    )
    if plan.sigmas.shape[0] == 0:
        return jnp.zeros((0, *plan.item_shape), plan.latent.dtype)
    if mesh is not None:
        _check_mesh(fn, mesh)
        return plan.run_sharded(mesh, plan.sigmas, plan.step_offset, plan.offset())
    return plan.run(plan.sigmas, plan.step_offset, plan.offset(), plan.start())[0]


def noised_latents_chunks(
    key: ArrayLike,
    latent: ArrayLike,
    sigmas: ArrayLike,
    *,
    chunk_steps: int,
    normalize: bool = False,
    coupling: str = "independent",
    batch_index: ArrayLike | None = None,
    step_offset: int = 0,
    noise_scaling: str = "eps",
    latent_format: LatentFormat | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Iterator[jax.Array]:
    """`noised_latents` in pieces of `chunk_steps` steps, for batches larger than memory.

    Yields arrays of `chunk_steps * B` entries (the last may be shorter); concatenated they
    equal `noised_latents` with the same arguments, bit for bit. Only one chunk is alive at a
    time if the caller drops each after use. Every argument is checked when the function is
    called, before the first chunk is asked for.

    **Arguments:**

    - `chunk_steps`: steps per chunk (positive).
    - `key`, `latent`, `sigmas`, `normalize`, `coupling`, `batch_index`, `step_offset`,
      `noise_scaling`, `latent_format`: as for `noised_latents`.
    - `mesh`: a one-axis `jax.sharding.Mesh`: each chunk's steps are spread over its devices
      (as `noised_latents(..., mesh=mesh)` does) and each chunk is a global array sharded along
      the batch axis, with the same bits. Except with `coupling="markov"`: a Markov chain is
      sequential, so its chunks run on one device (same bits; on the mesh each device would
      generate the chain's noise again).

    **Returns:** an iterator over the chunks, in step order.
    """
    fn = "noised_latents_chunks"
    plan = _Plan(
        fn, key, latent, sigmas, normalize, coupling, batch_index, step_offset, noise_scaling, latent_format
    )
    if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1:
        raise ValueError(f"{fn}: chunk_steps must be a positive int, got {chunk_steps!r}")
    if mesh is not None:
        _check_mesh(fn, mesh)
    return _chunks(plan, int(chunk_steps), None if plan.statics.coupling == "markov" else mesh)


def _chunks(plan: _Plan, chunk: int, mesh: jax.sharding.Mesh | None = None) -> Iterator[jax.Array]:
    n, batch = plan.sigmas.shape[0], plan.latent.shape[0]
    offset, carry = plan.offset(), plan.start()
    for start in range(0, n, chunk):
        part = plan.sigmas[start : start + chunk]
        real = part.shape[0]
        if real < chunk and n > chunk:  # pad the last chunk so every chunk shares one compilation
            part = jnp.concatenate([part, jnp.broadcast_to(part[-1:], (chunk - real,))])
        if mesh is None:
            z, carry = plan.run(part, plan.step_offset + start, offset, carry)
        else:
            z = plan.run_sharded(mesh, part, plan.step_offset + start, offset)
        yield z if real == chunk or n <= chunk else z[: real * batch]


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


def noised_latents_from_noise(
    latent: ArrayLike,
    sigmas: ArrayLike,
    noise: ArrayLike,
    *,
    normalize: bool = False,
    coupling: str = "independent",
    noise_scaling: str = "eps",
    latent_format: LatentFormat | None = None,
) -> jax.Array:
    """`noised_latents` with the standard normal noise given instead of drawn.

    For noise from another framework, e.g. torch's generator (what `torch_bridge` does to match
    the original node bit for bit): `noise[i*B + b]` is the noise of step `i`, item `b`, as in
    the node's `torch.randn((n*B, ...))`. With `coupling="shared"` only the first step's noise
    is used; with `"markov"` each step's noise is the innovation added to the previous one.
    The arguments are checked as `noised_latents` checks them.

    **Arguments:**

    - `latent`, `sigmas`, `normalize`, `coupling`, `noise_scaling`, `latent_format`: as for
      `noised_latents`.
    - `noise`: shape `(len(sigmas) * B, *latent.shape[1:])`, any floating dtype.

    **Returns:** the `(len(sigmas) * B, ...)` batch in the latent's dtype.
    """
    fn = "noised_latents_from_noise"
    checked = _check_common(fn, latent, sigmas, normalize, coupling, noise_scaling, latent_format)
    n, batch, item = checked.sigmas.shape[0], checked.latent.shape[0], checked.latent.shape[1:]
    noise = jnp.asarray(noise)
    if noise.shape != (n * batch, *item):
        raise ValueError(
            f"{fn}: noise must have shape {(n * batch, *item)} (len(sigmas) * B entries), got {noise.shape}"
        )
    if n == 0:
        return jnp.zeros((0, *item), checked.latent.dtype)
    return _from_noise(
        checked.latent, checked.sigmas, noise, statics=checked.statics, normalize=checked.normalize
    )
