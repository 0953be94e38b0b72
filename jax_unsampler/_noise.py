"""The noised batch: `z[i*B + b] = x[b] + sigma_i * eps[i, b]`, built with `lax.scan`.

The noise of (step `i`, item `b`) is drawn from `fold_in(fold_in(key, i), b)`: it depends on
the key, the step and the item and on nothing else, so a prefix of the sigmas gives a prefix
of the batch, and a run split into chunks of steps (pass `step_offset`) or over devices gives
the same bits as one run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ._keys import canonical_key
from ._validation import check_choice

COUPLINGS = ("independent", "shared", "markov")
"""How the noise of consecutive steps relates (see `noised_latents`)."""


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_latent(fn: str, latent) -> jax.Array:
    """Shape and dtype checks always; the finiteness check only where the latent is concrete."""
    if not hasattr(latent, "shape") or not hasattr(latent, "dtype"):
        latent = jnp.asarray(latent)
    if latent.ndim < 2:
        raise ValueError(
            f"{fn}: latent must have a batch axis and at least one more (rank >= 2), "
            f"got shape {tuple(latent.shape)}"
        )
    if not jnp.issubdtype(latent.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: latent must be floating point (float32, float16 or bfloat16), got {latent.dtype}"
        )
    if _is_concrete(latent) and not bool(jnp.all(jnp.isfinite(latent))):
        raise ValueError(f"{fn}: latent contains NaN or infinite values")
    return latent


def check_sigmas(fn: str, sigmas) -> jax.Array:
    if not hasattr(sigmas, "shape"):
        sigmas = jnp.asarray(sigmas, jnp.float32)
    if sigmas.ndim != 1:
        raise ValueError(f"{fn}: sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    if not jnp.issubdtype(sigmas.dtype, jnp.floating):
        raise ValueError(f"{fn}: sigmas must be floating point, got {sigmas.dtype}")
    if _is_concrete(sigmas) and not bool(jnp.all(jnp.isfinite(sigmas))):
        raise ValueError(f"{fn}: sigmas contain NaN or infinite values")
    return sigmas


def step_noise(key, step, item_ids, item_shape) -> jax.Array:
    """Standard normal noise of every item at one step: shape `(len(item_ids), *item_shape)`."""
    step_key = jax.random.fold_in(key, step)

    def one(item):
        return jax.random.normal(jax.random.fold_in(step_key, item), item_shape, jnp.float32)

    return jax.vmap(one)(item_ids)


def markov_start(batch: int, item_shape) -> tuple[jax.Array, jax.Array]:
    """The Markov chain's state before its first step: sigma 0, no accumulated noise."""
    return jnp.zeros((), jnp.float32), jnp.zeros((batch, *item_shape), jnp.float32)


def markov_gaps(sigmas, prev_sigma):
    """Per step, the noise scale that takes the previous level to this one: sqrt(s_i^2 - s_{i-1}^2)."""
    prev = jnp.concatenate([jnp.reshape(prev_sigma, (1,)), sigmas[:-1]])
    # (s - p)(s + p) rather than s*s - p*p: no multiply feeds an add, so XLA has no FMA to form
    # and every program (chunked, sharded) rounds the same way.
    return jnp.sqrt(jnp.maximum((sigmas - prev) * (sigmas + prev), 0.0))


NOISE_SCALINGS = ("eps", "const")
"""ComfyUI's `noise_scaling` rules: `x + sigma*eps` (EPS, V, EDM, Cosmos) or
`sigma*eps + (1 - sigma)*x` (CONST: rectified-flow models such as SD3, Flux, Wan)."""


def apply_noise(x, scaled_noise, sigma, scaling: str):
    """ComfyUI's `noise_scaling`, given `scaled_noise = sigma * eps`."""
    if scaling == "const":
        return scaled_noise + (1 - sigma) * x
    return x + scaled_noise


def _to_model(x, latent_format):
    return x if latent_format is None else latent_format.process_in(x)


def _from_model(z, latent_format):
    return z if latent_format is None else latent_format.process_out(z)


def _local_scan(key, x, sigmas, gaps, step_ids, item_ids, offset, acc, statics, emit=True):
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


@functools.partial(jax.jit, static_argnames=("statics",))
def _noised_scan(key, x, sigmas, step_ids, item_ids, offset, carry, *, statics):
    """One device: the `(len(sigmas) * B, *item)` noised latents and the Markov state after them."""
    prev_sigma, acc = carry
    gaps = markov_gaps(sigmas, prev_sigma)
    z, acc = _local_scan(key, x, sigmas, gaps, step_ids, item_ids, offset, acc, statics)
    # Flattened here, inside the jit, where it is free; outside it would copy the whole batch.
    return z.reshape((-1, *x.shape[1:])), (sigmas[-1], acc)


@functools.partial(jax.jit, static_argnames=("statics", "mesh", "first_step"))
def _noised_sharded(key, x, sigmas, item_ids, offset, *, statics, mesh, first_step):
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
    coupling = statics[0]
    spec = jax.sharding.PartitionSpec
    split = jax.sharding.NamedSharding(mesh, spec(axis))
    padded, gaps = (jax.lax.with_sharding_constraint(v, split) for v in (padded, gaps))

    def block(sig, gap, key, x, item_ids, offset):
        d = jax.lax.axis_index(axis)
        step_ids = jnp.uint32(first_step) + (d * per).astype(jnp.uint32) + jnp.arange(per, dtype=jnp.uint32)
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
        in_specs=(spec(axis), spec(axis), spec(), spec(), spec(), spec()),
        out_specs=spec(axis),
        check_vma=False,
    )(padded, gaps, key, x, item_ids, offset)
    z = z[:n].reshape((n * x.shape[0], *x.shape[1:]))
    return jax.lax.with_sharding_constraint(z, split)


def _auto_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The same devices and axis with automatic sharding, so an uneven last block can be sliced
    off (explicit axes cannot express uneven shards)."""
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,))


def _entry_mean(x0, eps0, sigma0, scaling, latent_format):
    """Mean of one noised entry: the scalar `normalize` subtracts, for the batch's first entry.

    The first step draws the same noise in every coupling, so this needs no coupling.
    """
    z0 = apply_noise(_to_model(x0[None], latent_format), sigma0 * eps0[None], sigma0, scaling)
    return jnp.mean(_from_model(z0, latent_format))


@functools.partial(jax.jit, static_argnames=("statics",))
def _first_entry_mean(key, x, sigma0, step0, item0, *, statics):
    """`_entry_mean` of the first step's first item, its noise drawn from the key."""
    _, scaling, latent_format, _ = statics
    eps = step_noise(key, step0, item0[None], x.shape[1:])[0]
    return _entry_mean(x[0], eps, sigma0, scaling, latent_format)


def _item_ids(fn: str, batch_index, batch: int):
    if batch_index is None:
        return jnp.arange(batch, dtype=jnp.uint32)
    ids = jnp.asarray(batch_index)
    if ids.shape != (batch,) or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: batch_index must be {batch} integers (one per latent), got "
            f"{ids.dtype} of shape {tuple(ids.shape)}"
        )
    if _is_concrete(ids) and bool(jnp.any(ids < 0)):
        raise ValueError(f"{fn}: batch_index must be non-negative, got {np.asarray(ids).tolist()}")
    return ids.astype(jnp.uint32)


def _check_mesh(fn: str, mesh) -> None:
    if not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"{fn}: mesh must have exactly one axis (the steps are spread over it), "
            f"got axes {mesh.axis_names}"
        )


class _Plan:
    """Validated, canonical arguments shared by `noised_latents` and its chunked variant."""

    def __init__(self, fn, key, latent, sigmas, normalize, coupling, batch_index, step_offset,
                 noise_scaling, latent_format):  # fmt: skip
        self.key = canonical_key(fn, key)
        self.latent = check_latent(fn, latent)
        sigmas = check_sigmas(fn, sigmas)
        check_choice(fn, "coupling", coupling, COUPLINGS)
        check_choice(fn, "noise_scaling", noise_scaling, NOISE_SCALINGS)
        if coupling == "markov" and _is_concrete(sigmas) and bool(jnp.any(jnp.diff(sigmas) < 0)):
            raise ValueError(f"{fn}: coupling='markov' needs ascending sigmas (least noise first)")
        if not isinstance(normalize, (bool, np.bool_)):
            raise ValueError(f"{fn}: normalize must be True or False, got {normalize!r}")
        if isinstance(step_offset, bool) or not isinstance(step_offset, (int, np.integer)) or step_offset < 0:
            raise ValueError(f"{fn}: step_offset must be a non-negative int, got {step_offset!r}")
        if latent_format is not None and not hasattr(latent_format, "process_in"):
            raise ValueError(
                f"{fn}: latent_format must be a LatentFormat (e.g. preset(name).latent_format), "
                f"got {type(latent_format).__name__}"
            )
        self.sigmas = sigmas.astype(jnp.float32)
        self.item_ids = _item_ids(fn, batch_index, self.latent.shape[0])
        self.step_offset = int(step_offset)
        self.normalize = bool(normalize)
        self.coupling = coupling
        self.statics = (coupling, noise_scaling, latent_format, self.latent.dtype)
        self.x = self.latent.astype(jnp.float32)

    @property
    def item_shape(self):
        return self.latent.shape[1:]

    def offset(self):
        if not self.normalize or self.sigmas.shape[0] == 0:
            return jnp.zeros((), jnp.float32)
        step0, item0 = jnp.uint32(self.step_offset), self.item_ids[0]
        return _first_entry_mean(self.key, self.x, self.sigmas[0], step0, item0, statics=self.statics)

    def start(self):
        return markov_start(self.latent.shape[0], self.item_shape)

    def run(self, sigmas, first_step, offset, carry):
        n = sigmas.shape[0]
        if n == 1:  # see _local_scan: never a one-step scan; the repeated sigma adds no noise
            sigmas = jnp.concatenate([sigmas, sigmas])
        step_ids = jnp.arange(sigmas.shape[0], dtype=jnp.uint32) + jnp.uint32(first_step)
        z, carry = _noised_scan(
            self.key, self.x, sigmas, step_ids, self.item_ids, offset, carry, statics=self.statics
        )
        return (z if sigmas.shape[0] == n else z[: n * self.latent.shape[0]]), carry

    def run_sharded(self, mesh):
        return _noised_sharded(
            self.key, self.x, self.sigmas, self.item_ids, self.offset(),
            statics=self.statics, mesh=_auto_mesh(mesh), first_step=self.step_offset,
        )  # fmt: skip


_NOISE_DOC_ARGS = """
    - `key`: a PRNG key (`jax.random.key(seed)`, or a legacy `jax.random.PRNGKey(seed)`).
    - `latent`: `(B, ...)`, rank 2 or more (4-D images, 5-D video, 3-D audio); float32, float16
      or bfloat16 (half precision is computed in float32 and rounded once).
    - `sigmas`: 1-D, the noise level of each step (e.g. from `unsampler_sigmas`).
    - `normalize`: subtract one scalar, the mean of the batch's first entry, from every entry
      (the node's `normalize`).
    - `coupling`: `"independent"` (the node: fresh noise at every step), `"shared"` (one noise
      per item for all steps) or `"markov"` (each step adds the noise that takes the previous
      level to the next, like the forward diffusion process; sigmas must ascend). Every
      coupling gives each entry the same distribution; they differ in how entries correlate.
    - `batch_index`: optional `B` non-negative ints naming each item's noise stream
      (ComfyUI's LATENT `batch_index`); default `0..B-1`.
    - `step_offset`: the global index of `sigmas[0]`, for runs split into chunks of steps.
    - `noise_scaling`: `"eps"` (the node: `x + sigma*eps`) or `"const"`
      (`sigma*eps + (1 - sigma)*x`, rectified-flow models).
    - `latent_format`: a `LatentFormat`; when given, the noise is applied in the model's space
      (`process_out(noise_scaling(process_in(x)))`), as ComfyUI feeds the model.
"""

_MESH_DOC = """    - `mesh`: a one-axis `jax.sharding.Mesh`: the steps are spread over its devices in
      contiguous blocks and the result is a global array sharded along the batch axis, with the
      same bits as on one device. With `coupling="markov"` the running sum is passed from
      device to device, so each device generates its noise `ndev` times (exact, not faster).
"""


def noised_latents(
    key,
    latent,
    sigmas,
    *,
    normalize: bool = False,
    coupling: str = "independent",
    batch_index=None,
    step_offset: int = 0,
    noise_scaling: str = "eps",
    latent_format=None,
    mesh=None,
):
    plan = _Plan("noised_latents", key, latent, sigmas, normalize, coupling, batch_index, step_offset,
                 noise_scaling, latent_format)  # fmt: skip
    if plan.sigmas.shape[0] == 0:
        return jnp.zeros((0, *plan.item_shape), plan.latent.dtype)
    if mesh is not None:
        _check_mesh("noised_latents", mesh)
        return plan.run_sharded(mesh)
    return plan.run(plan.sigmas, plan.step_offset, plan.offset(), plan.start())[0]


noised_latents.__doc__ = (
    """The node's noised batch for a latent of any batch size and rank.

    `z[i*B + b] = x[b] + sigmas[i] * eps[i, b]`, step-major, each `eps` standard normal with
    `x[b]`'s shape, drawn from `fold_in(fold_in(key, step_offset + i), batch_index[b])`.

    **Arguments:**
"""
    + _NOISE_DOC_ARGS
    + _MESH_DOC
    + """
    **Returns:** an array of shape `(len(sigmas) * B, *latent.shape[1:])` and the latent's dtype.
    """
)


def noised_latents_chunks(
    key,
    latent,
    sigmas,
    *,
    chunk_steps: int,
    normalize: bool = False,
    coupling: str = "independent",
    batch_index=None,
    step_offset: int = 0,
    noise_scaling: str = "eps",
    latent_format=None,
) -> Iterator[jax.Array]:
    plan = _Plan("noised_latents_chunks", key, latent, sigmas, normalize, coupling, batch_index,
                 step_offset, noise_scaling, latent_format)  # fmt: skip
    if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1:
        raise ValueError(f"noised_latents_chunks: chunk_steps must be a positive int, got {chunk_steps!r}")
    return _chunks(plan, int(chunk_steps))


def _chunks(plan: _Plan, chunk: int) -> Iterator[jax.Array]:
    n, batch = plan.sigmas.shape[0], plan.latent.shape[0]
    offset, carry = plan.offset(), plan.start()
    for start in range(0, n, chunk):
        part = plan.sigmas[start : start + chunk]
        real = part.shape[0]
        if real < chunk and n > chunk:  # pad the last chunk so every chunk shares one compilation
            part = jnp.concatenate([part, jnp.broadcast_to(part[-1:], (chunk - real,))])
        z, carry = plan.run(part, plan.step_offset + start, offset, carry)
        yield z if real == chunk or n <= chunk else z[: real * batch]


noised_latents_chunks.__doc__ = (
    """`noised_latents` in pieces of `chunk_steps` steps, for batches larger than memory.

    Yields arrays of `chunk_steps * B` entries (the last may be shorter); concatenated they
    equal `noised_latents` with the same arguments, bit for bit. Only one chunk is alive at a
    time if the caller drops each after use.

    **Arguments:**

    - `chunk_steps`: steps per chunk (positive).
"""
    + _NOISE_DOC_ARGS
)


@functools.partial(jax.jit, static_argnames=("coupling", "scaling", "latent_format", "normalize"))
def _from_noise(latent, sigmas, noise, *, coupling, scaling, latent_format, normalize):
    """The batch from given noise in one pass: reshapes, casts and `normalize` happen inside."""
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
        return z.astype(latent.dtype)

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
    latent,
    sigmas,
    noise,
    *,
    normalize: bool = False,
    coupling: str = "independent",
    noise_scaling: str = "eps",
    latent_format=None,
):
    """`noised_latents` with the standard normal noise given instead of drawn.

    For noise from another framework, e.g. torch's generator (what `torch_bridge` does to match
    the original node bit for bit): `noise[i*B + b]` is the noise of step `i`, item `b`, as in
    the node's `torch.randn((n*B, ...))`. With `coupling="shared"` only the first step's noise
    is used; with `"markov"` each step's noise is the innovation added to the previous one.

    **Arguments:** `latent`, `sigmas`, `normalize`, `coupling`, `noise_scaling` and
    `latent_format` as for `noised_latents`; `noise` of shape `(len(sigmas) * B, *latent.shape[1:])`.

    **Returns:** the `(len(sigmas) * B, ...)` batch in the latent's dtype.
    """
    fn = "noised_latents_from_noise"
    latent = check_latent(fn, latent)
    sigmas = check_sigmas(fn, sigmas)
    check_choice(fn, "coupling", coupling, COUPLINGS)
    check_choice(fn, "noise_scaling", noise_scaling, NOISE_SCALINGS)
    n, batch, item = sigmas.shape[0], latent.shape[0], latent.shape[1:]
    noise = jnp.asarray(noise)
    if noise.shape != (n * batch, *item):
        raise ValueError(
            f"{fn}: noise must have shape {(n * batch, *item)} (len(sigmas) * B entries), got {noise.shape}"
        )
    if n == 0:
        return jnp.zeros((0, *item), latent.dtype)
    return _from_noise(
        latent, sigmas.astype(jnp.float32), noise,
        coupling=coupling, scaling=noise_scaling, latent_format=latent_format, normalize=bool(normalize),
    )  # fmt: skip
