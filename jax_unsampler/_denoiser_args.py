"""A denoiser as an argument of a jitted kernel: its arrays traced, the rest static.

**The rule** (one place; the docs quote it). The sampling functions compile one program per
denoiser *structure* and pass every array the denoiser holds as a traced argument, so:

- new values never recompile and are never stale: a pytree denoiser's array leaves (a
  `jax.tree_util.Partial` over parameters, a flax struct or equinox module with `__call__`,
  `denoiser_from_model(..., params=...)`), the arrays a function closes over (closure cells
  and the module globals its own code names), its default arguments, the array attributes of a
  callable object or of a bound method's object (also reassigned ones: `d.w = new` is read at
  every call), and the arguments of a `functools.partial` are all read at each call;
- what is not an array (the code, Python numbers, strings, a pytree's static fields) is part
  of the program: another value compiles another program; an unhashable one is told apart by
  identity;
- arrays reached only through *another* function's globals are read when the program is
  traced, as `jax.jit` reads them: pass them as arguments or close over them.

Because captured arrays are arguments rather than constants, a sweep over closures of one
`lambda` compiles once and keeps no copy of each closure's arrays: memory does not grow.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
"""`D(x, sigma)`: the `(B, ...)` latents `x` at the `(B,)` noise levels `sigma` -> the denoised `(B, ...)`."""

_DEPTH = 4  # how deep objects and closures are searched for arrays


class _ByIdentity:
    """An unhashable static value, told apart by identity."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value


def _static(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return _ByIdentity(value)
    return value


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, _ByIdentity) else value


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


class _Lifted:
    """A non-pytree value that holds arrays: its arrays become arguments, and it is rebuilt
    around them inside the kernel. Equal (and hashed) by `key`: what is compiled in."""

    def __init__(self, key: Any, rebuild: Callable[[Iterator[jax.Array]], Any]) -> None:
        self.key = key
        self.rebuild = rebuild

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Lifted) and other.key == self.key


def _split(value: Any, arrays: list[jax.Array], depth: int, seen: frozenset[int]) -> Any:
    """The static stand-in of `value` (a pytree of static leaves and `_Lifted`), appending its
    arrays to `arrays` in order."""
    leaves, treedef = jax.tree_util.tree_flatten(value)
    if len(leaves) == 1 and leaves[0] is value and not _is_array(value):  # not a pytree
        return ("leaf", _lift(value, arrays, depth, seen))
    parts: list[Any] = []
    for leaf in leaves:
        if _is_array(leaf):
            arrays.append(jnp.asarray(leaf))
            parts.append(None)
        else:
            parts.append(_lift(leaf, arrays, depth, seen))
    return ("tree", treedef, tuple(parts))


def _join(static: Any, it: Iterator[jax.Array]) -> Any:
    if static[0] == "leaf":
        return _rebuild(static[1], it)
    _, treedef, parts = static
    leaves = [next(it) if part is None else _rebuild(part, it) for part in parts]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _rebuild(part: Any, it: Iterator[jax.Array]) -> Any:
    return part.rebuild(it) if isinstance(part, _Lifted) else _unwrap(part)


def _lift(value: Any, arrays: list[jax.Array], depth: int, seen: frozenset[int]) -> Any:
    """A non-array leaf: `_Lifted` where it holds arrays (searched `depth` levels deep), else
    the value itself as a static part."""
    if (
        depth <= 0
        or id(value) in seen
        or isinstance(value, (type, types.ModuleType, types.BuiltinFunctionType))
    ):
        return _static(value)
    seen = seen | {id(value)}
    mark = len(arrays)
    lifted: _Lifted | None = None
    if isinstance(value, functools.partial):
        inner = _split((value.func, value.args, value.keywords), arrays, depth - 1, seen)

        def make_partial(it: Iterator[jax.Array], inner: Any = inner) -> Any:
            func, args, keywords = _join(inner, it)
            return functools.partial(func, *args, **keywords)

        lifted = _Lifted(("partial", inner), make_partial)
    elif isinstance(value, types.FunctionType):
        lifted = _lift_function(value, arrays, depth, seen)
    elif isinstance(value, types.MethodType):
        inner = _split((value.__func__, value.__self__), arrays, depth - 1, seen)

        def make_method(it: Iterator[jax.Array], inner: Any = inner) -> Any:
            func, obj = _join(inner, it)
            return types.MethodType(func, obj)

        lifted = _Lifted(("method", inner), make_method)
    elif hasattr(value, "__dict__") and not callable(getattr(value, "__get__", None)):
        state = dict(vars(value))
        inner = _split(state, arrays, depth - 1, seen)
        template = _ByIdentity(value)

        def make_object(it: Iterator[jax.Array], inner: Any = inner, template: _ByIdentity = template) -> Any:
            obj = copy.copy(template.value)
            for name, attr in _join(inner, it).items():
                object.__setattr__(obj, name, attr)
            return obj

        lifted = _Lifted(("object", type(value), inner), make_object)
    if lifted is None or len(arrays) == mark:
        del arrays[mark:]
        return _static(value)
    return lifted


def _lift_function(
    fn: types.FunctionType, arrays: list[jax.Array], depth: int, seen: frozenset[int]
) -> _Lifted:
    cells = tuple(c.cell_contents for c in fn.__closure__ or ())
    names = tuple(
        n for n in fn.__code__.co_names if n in fn.__globals__ and _holds_arrays(fn.__globals__[n], depth - 1)
    )
    state = (cells, tuple(fn.__globals__[n] for n in names), fn.__defaults__, fn.__kwdefaults__)
    inner = _split(state, arrays, depth - 1, seen)
    template = _ByIdentity(fn)

    def make_function(it: Iterator[jax.Array], inner: Any = inner, template: _ByIdentity = template) -> Any:
        cells, values, defaults, kwdefaults = _join(inner, it)
        f = template.value
        glob = {**f.__globals__, **dict(zip(names, values, strict=True))} if names else f.__globals__
        closure = tuple(types.CellType(c) for c in cells) or None
        new = types.FunctionType(f.__code__, glob, f.__name__, defaults, closure)
        new.__kwdefaults__ = kwdefaults
        return new

    # The code (not the function object) is compiled in: closures of one `lambda` share a program.
    return _Lifted(("function", fn.__code__, names, inner), make_function)


def _holds_arrays(value: Any, depth: int) -> bool:
    """Whether a global is (or holds, `depth` levels deep) an array: cheap, no modules or classes."""
    if _is_array(value):
        return True
    if depth <= 0 or isinstance(
        value, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    ):
        return False
    if isinstance(value, (list, tuple)):
        return any(_holds_arrays(v, depth - 1) for v in value[:64])
    if isinstance(value, dict):
        return any(_holds_arrays(v, depth - 1) for v in list(value.values())[:64])
    state = getattr(value, "__dict__", None)
    return isinstance(state, dict) and any(_holds_arrays(v, depth - 1) for v in list(state.values())[:64])


class DenoiserStatic(NamedTuple):
    """The static part of a denoiser (hashable): what its kernel compiles in."""

    parts: Any


def split_denoiser(denoiser: Denoiser) -> tuple[list[jax.Array], DenoiserStatic]:
    """`(arrays, static part)`: every array the denoiser holds (see the module's rule)."""
    from ._denoisers import ModelDenoiser

    arrays: list[jax.Array] = []
    if isinstance(denoiser, ModelDenoiser):  # its static apply_fn may hold arrays too
        apply_fn = _split(denoiser.apply_fn, arrays, _DEPTH, frozenset())
        rest = _split(denoiser.replace(apply_fn=None), arrays, _DEPTH, frozenset())
        return arrays, DenoiserStatic(("model", apply_fn, rest))
    return arrays, DenoiserStatic(_split(denoiser, arrays, _DEPTH, frozenset()))


def join_denoiser(arrays: list[jax.Array], static: DenoiserStatic) -> Denoiser:
    """The denoiser `split_denoiser` took apart, around `arrays` (traced inside the kernel)."""
    it = iter(arrays)
    if static.parts[0] == "model":
        apply_fn = _join(static.parts[1], it)
        return _join(static.parts[2], it).replace(apply_fn=apply_fn)
    return _join(static.parts, it)
