"""The noised batch over a one-axis mesh: contiguous blocks of steps per device, same bits."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._noise_kernels import _kernel, _local_scan, _Statics, markov_gaps


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


def _check_mesh(fn: str, mesh: object) -> None:
    if not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"{fn}: mesh must have exactly one axis (the steps are spread over it), "
            f"got axes {mesh.axis_names}"
        )
