"""The noised batch: `z[i*B + b] = x[b] + sigma_i * eps[i, b]`, built with `lax.scan`.

The noise of (step `i`, item `b`) is drawn from `fold_in(fold_in(key, i), b)`: it depends on
the key, the step and the item and on nothing else, so a prefix of the sigmas gives a prefix
of the batch, and a run split into chunks of steps (pass `step_offset`) or over devices gives
the same bits as one run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._validation import check_choice

COUPLINGS = ("independent", "shared", "markov")
"""How the noise of consecutive steps relates (see `noised_latents`)."""


def canonical_key(fn: str, key) -> jax.Array:
    """A typed key from a typed key or a legacy uint32 key, with a message saying how to fix it."""
    if isinstance(key, (int, np.integer)):
        raise ValueError(f"{fn}: key must be a PRNG key, got the int {key!r}; pass jax.random.key({key!r})")
    try:
        dtype = key.dtype
    except AttributeError:
        raise ValueError(
            f"{fn}: key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
            f"got {type(key).__name__}"
        ) from None
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"{fn}: expected a single key, got a key array of shape {key.shape}; "
                "use jax.vmap to map over keys"
            )
        return key
    if dtype == jnp.uint32 and key.ndim == 1:
        return jax.random.wrap_key_data(key)
    if dtype == jnp.uint32 and key.ndim > 1:
        raise ValueError(
            f"{fn}: expected a single legacy key of shape (2,), got shape {key.shape}; "
            "use jax.vmap to map over keys"
        )
    raise ValueError(
        f"{fn}: key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
        f"got an array of dtype {dtype} and shape {getattr(key, 'shape', ())}"
    )


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


def _noise_path(key, sigmas, step_ids, item_ids, item_shape, coupling, carry_in):
    """A scan body factory: yields `sigma_i * eps_i` per step, for the chosen coupling."""
    if coupling == "independent":

        def body(carry, inp):
            step, sigma = inp
            return carry, sigma * step_noise(key, step, item_ids, item_shape)

    elif coupling == "shared":
        shared = step_noise(key, 0, item_ids, item_shape)

        def body(carry, inp):
            _, sigma = inp
            return carry, sigma * shared

    else:  # markov: add the variance that takes sigma_{i-1} to sigma_i

        def body(carry, inp):
            step, sigma = inp
            prev_sigma, prev_noise = carry
            gap = jnp.sqrt(jnp.maximum(sigma * sigma - prev_sigma * prev_sigma, 0.0))
            noise = prev_noise + gap * step_noise(key, step, item_ids, item_shape)
            return (sigma, noise), noise

    return body, carry_in


def markov_start(batch: int, item_shape) -> tuple[jax.Array, jax.Array]:
    """The Markov chain's state before its first step: sigma 0, no accumulated noise."""
    return jnp.zeros((), jnp.float32), jnp.zeros((batch, *item_shape), jnp.float32)


def apply_noise(x, scaled_noise, sigma, scaling: str):
    """ComfyUI's `noise_scaling`: `x + sigma*eps`, or `sigma*eps + (1 - sigma)*x` for CONST."""
    if scaling == "const":
        return scaled_noise + (1 - sigma) * x
    return x + scaled_noise


@functools.partial(jax.jit, static_argnames=("coupling", "scaling", "out_dtype"))
def _noised_scan(key, x, sigmas, step_ids, item_ids, offset, carry, *, coupling, scaling, out_dtype):
    """The kernel: `(len(sigmas), B, *item)` noised latents and the final Markov state."""
    item_shape = x.shape[1:]
    body, carry = _noise_path(key, sigmas, step_ids, item_ids, item_shape, coupling, carry)

    def step(c, inp):
        c, scaled = body(c, inp)
        z = apply_noise(x, scaled, inp[1], scaling) - offset
        return c, z.astype(out_dtype)

    carry, z = jax.lax.scan(step, carry, (step_ids, sigmas))
    return z, carry


def first_entry_mean(key, x, sigma0, item_id0, scaling: str = "add") -> jax.Array:
    """Mean of the batch's first entry (step 0, item 0): what `normalize` subtracts.

    Step 0 draws the same noise in every coupling, so this needs no coupling.
    """
    eps = step_noise(key, 0, jnp.asarray([item_id0]), x.shape[1:])[0]
    return jnp.mean(apply_noise(x[0], sigma0 * eps, sigma0, scaling))


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


def noised_latents(
    key,
    latent,
    sigmas,
    *,
    normalize: bool = False,
    coupling: str = "independent",
    batch_index=None,
    step_offset: int = 0,
):
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
      level to the next, like the forward diffusion process; sigmas must ascend). Every
      coupling gives each entry the same distribution; they differ in how entries correlate.
    - `batch_index`: optional `B` non-negative ints naming each item's noise stream
      (ComfyUI's LATENT `batch_index`); default `0..B-1`.
    - `step_offset`: the global index of `sigmas[0]`, for runs split into chunks of steps.

    **Returns:** an array of shape `(len(sigmas) * B, *latent.shape[1:])` and the latent's dtype.
    """
    fn = "noised_latents"
    key = canonical_key(fn, key)
    latent = check_latent(fn, latent)
    sigmas = check_sigmas(fn, sigmas)
    check_choice(fn, "coupling", coupling, COUPLINGS)
    if coupling == "markov" and _is_concrete(sigmas) and bool(jnp.any(jnp.diff(sigmas) < 0)):
        raise ValueError(f"{fn}: coupling='markov' needs ascending sigmas (least noise first)")
    if not isinstance(normalize, (bool, np.bool_)):
        raise ValueError(f"{fn}: normalize must be True or False, got {normalize!r}")
    if isinstance(step_offset, bool) or not isinstance(step_offset, (int, np.integer)) or step_offset < 0:
        raise ValueError(f"{fn}: step_offset must be a non-negative int, got {step_offset!r}")
    batch = latent.shape[0]
    item_ids = _item_ids(fn, batch_index, batch)
    return _noised(
        key, latent, sigmas.astype(jnp.float32), item_ids, int(step_offset), normalize, coupling, "add"
    )


def _noised(key, latent, sigmas, item_ids, step_offset, normalize, coupling, scaling):
    x = latent.astype(jnp.float32)
    n, batch = sigmas.shape[0], latent.shape[0]
    if n == 0:
        return jnp.zeros((0, *latent.shape[1:]), latent.dtype)
    offset = jnp.zeros((), jnp.float32)
    if normalize:
        offset = _first_entry_mean(key, x, sigmas[0], item_ids[0], scaling)
    step_ids = jnp.arange(step_offset, step_offset + n, dtype=jnp.uint32)
    carry = markov_start(batch, latent.shape[1:]) if coupling == "markov" else None
    z, _ = _noised_scan(
        key, x, sigmas, step_ids, item_ids, offset, carry,
        coupling=coupling, scaling=scaling, out_dtype=latent.dtype,
    )  # fmt: skip
    return z.reshape((n * batch, *latent.shape[1:]))


_first_entry_mean = jax.jit(first_entry_mean, static_argnames=("scaling",))
