"""The noised batch: `z[i*B + b] = x[b] + sigma_i * eps[i, b]`: the entry points and their checks.

The noise of (step `i`, item `b`) is drawn from `fold_in(fold_in(key, i), b)`: it depends on
the key, the step and the item and on nothing else, so a prefix of the sigmas gives a prefix
of the batch, and a run split into chunks of steps (pass `step_offset`) or over devices gives
the same bits as one run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _validation
from ._keys import canonical_key
from ._latent_format import LatentFormat
from ._names import COUPLINGS, ITEM_ID_MAX, NOISE_SCALINGS
from ._noise_kernels import _first_entry_mean, _from_noise, _noised_scan, _Statics, markov_start
from ._sharding import _auto_mesh, _check_mesh, _noised_sharded
from ._validation import check_choice, check_int


def _is_concrete(x: object) -> bool:
    return _validation.is_concrete(x)


def _holds(predicate: Callable[[jax.Array], jax.Array], x: jax.Array) -> bool:
    """`predicate(x)` for a concrete `x`, evaluated now even while a caller's `jax.jit` traces.

    An array captured from a closure is concrete, but operations on it inside a trace are
    staged; evaluating the check eagerly keeps `bool()` from meeting a tracer.
    """
    with jax.ensure_compile_time_eval():
        return bool(predicate(x))


def check_latent(fn: str, latent: ArrayLike) -> jax.Array:
    """The package's one latent rule (`_validation.check_latent`)."""
    return _validation.check_latent(fn, latent)


def check_sigmas(fn: str, sigmas: ArrayLike) -> jax.Array:
    """The package's one sigma rule, in either order (`_validation.check_sigmas`)."""
    return _validation.check_sigmas(fn, sigmas)


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
    return noised_batch(
        "noised_latents", key, latent, sigmas, normalize=normalize, coupling=coupling,
        batch_index=batch_index, step_offset=step_offset, noise_scaling=noise_scaling,
        latent_format=latent_format, mesh=mesh,
    )  # fmt: skip


def noised_batch(
    fn: str,
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
    """`noised_latents` for the public function `fn` (its errors name it)."""
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
