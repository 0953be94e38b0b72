"""A denoiser as an argument of a jitted kernel: its array leaves traced, the rest static.

The public sampling functions validate in plain Python, then call a private kernel jitted with
the names and the denoiser's non-array parts static, as jax.random's wrappers do: an eager call
compiles one program (not one per operation), and new parameters of a pytree denoiser (a
`jax.tree_util.Partial` over arrays, a flax struct dataclass with `__call__`) do not recompile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
"""`D(x, sigma)`: the `(B, ...)` latents `x` at the `(B,)` noise levels `sigma` -> the denoised `(B, ...)`."""


class DenoiserStatic(NamedTuple):
    """The static part of a denoiser: its treedef and its non-array leaves by position."""

    treedef: Any
    leaves: tuple[tuple[int, Any], ...]


class _ByIdentity:
    """An unhashable static leaf (say a non-frozen dataclass with `__call__`), compared by
    identity: the kernel is reused while the same object is passed, recompiled for another."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value


def _static(leaf: Any) -> Any:
    try:
        hash(leaf)
    except TypeError:
        return _ByIdentity(leaf)
    return leaf


def split_denoiser(denoiser: Denoiser) -> tuple[list[jax.Array], DenoiserStatic]:
    """`(array leaves, static part)`; a plain function is one static leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(denoiser)
    is_array = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]
    arrays = [jnp.asarray(leaf) for leaf, a in zip(leaves, is_array, strict=True) if a]
    pairs = enumerate(zip(leaves, is_array, strict=True))
    static = tuple((i, _static(leaf)) for i, (leaf, a) in pairs if not a)
    return arrays, DenoiserStatic(treedef, static)


def join_denoiser(arrays: list[jax.Array], static: DenoiserStatic) -> Denoiser:
    """The denoiser `split_denoiser` took apart, with `arrays` (traced inside the kernel)."""
    fixed = {i: leaf.value if isinstance(leaf, _ByIdentity) else leaf for i, leaf in static.leaves}
    it = iter(arrays)
    leaves = [fixed[i] if i in fixed else next(it) for i in range(len(arrays) + len(fixed))]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)
