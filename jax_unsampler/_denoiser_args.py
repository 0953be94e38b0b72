"""A denoiser as an argument of a jitted kernel: what is read at every call, what is compiled in.

**The rule** (the one place; docs/denoisers.md quotes it, the docstrings link to it):

1. **A pytree denoiser** — one that `jax.tree_util` flattens: an Equinox module, a Flax NNX
   module, a `jax.tree_util.Partial`, a flax `struct` dataclass, `denoiser_from_model(...,
   params=...)` — is treated as `jax.jit` treats a pytree argument (Equinox's `filter_jit`):
   its array leaves are arguments, read at every call (new values: the same program, the new
   result); everything else (the tree's structure, its static fields, its non-array leaves,
   compared with `==`) is the program's key. No tracing per call: the fast path. Its *code*
   is traced once per key, so a value that code reads from outside the tree (a module-level
   global, a class attribute) is read when the program is compiled, exactly as under
   `jax.jit`: put it in the tree. A pytree whose static part cannot be hashed is taken as 2.
2. **Any other callable** (a function, a closure, a bound method, an object with `__call__`,
   `denoiser_from_model` without `params=`, a `cfg_denoiser`) is traced at every call
   (`jax.make_jaxpr`). Every array it reads, at any depth and through any path (globals,
   attributes, closure cells, dicts, other functions' globals, an inner `jax.jit`), is a
   constant of that trace and is passed to the program as an argument; the traced computation
   itself, in which every Python value read while tracing is a literal or a shape, is the
   program's key. So a new value of anything it reads gives the new result, and an equal
   computation reuses the program. The cost is one trace of the denoiser per call (measured
   in benchmarks/denoisers.md); the pytree path does not pay it.
3. **A denoiser does not change itself.** It is called in Python once per call (traced), not
   once per step: a call that rebinds one of its own attributes or closure cells (`self.n +=
   1`) is refused (the values are put back), and a Flax NNX module that updates its
   `nnx.Variable`s inside the call (BatchNorm in training mode) is refused.
4. **Nothing a traced denoiser holds is kept** by a compiled program: its arrays are
   arguments. (A pytree denoiser's static part is kept, as `jax.jit` keeps a static argument.)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
"""`D(x, sigma)`: the `(B, ...)` latents `x` at the `(B,)` noise levels `sigma` -> the denoised `(B, ...)`."""

_ARRAY = object()  # a pytree leaf passed as an argument


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray, np.generic))


class TreeStatic(NamedTuple):
    """The pytree path's key: the structure and the non-array leaves."""

    treedef: Any
    statics: tuple[Any, ...]


class TracedStatic:
    """The trace path's key: the traced computation (equal and hashed by its digest)."""

    def __init__(self, digest: str, jaxpr: Any, out_tree: Any, guided: bool, avals: Any, keep: tuple) -> None:
        self.digest, self.jaxpr, self.out_tree, self.guided, self.avals = (
            digest,
            jaxpr,
            out_tree,
            guided,
            avals,
        )
        self.keep = keep  # what the digest names by identity (callbacks, derivative rules)

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TracedStatic) and other.digest == self.digest


DenoiserStatic = TreeStatic | TracedStatic


def split_denoiser(fn: str, denoiser: Denoiser, x: Any) -> tuple[list[Any], DenoiserStatic]:
    """`(arrays, static part)` of `denoiser` for calls on latents like `x` (an array or a
    `jax.ShapeDtypeStruct`: the shape and compute dtype the loop calls it with; sigma is `(B,)`
    of the same dtype). See the module's rule."""
    tree = _as_tree(denoiser)
    if tree is not None:
        return tree
    return _trace(fn, denoiser, jax.ShapeDtypeStruct(tuple(x.shape), x.dtype))


def join_denoiser(arrays: list[Any], static: DenoiserStatic) -> Denoiser:
    """The denoiser `split_denoiser` took apart, around `arrays` (traced inside the kernel)."""
    if isinstance(static, TreeStatic):
        it: Iterator[Any] = iter(arrays)
        leaves = [next(it) if s is _ARRAY else s for s in static.statics]
        return jax.tree_util.tree_unflatten(static.treedef, leaves)
    return (_GuidedTraced if static.guided else _Traced)(static, list(arrays))


@contextlib.contextmanager
def denoiser_errors(fn: str) -> Iterator[None]:
    """Around a kernel call: a Flax NNX denoiser that updates its state inside the call (rule 3)
    is told so in one line, naming `fn`."""
    try:
        yield
    except Exception as err:
        if type(err).__name__ == "TraceContextError" and type(err).__module__.startswith("flax"):
            raise ValueError(_MUTATED_NNX.format(fn=fn)) from err
        raise


_MUTATED_NNX = (
    "{fn}: the denoiser (a Flax NNX module) updates its own nnx.Variable state inside the call "
    "(e.g. BatchNorm's statistics in training mode), which a sampling loop cannot keep; call "
    "model.eval() first, or keep what it updates outside the module"
)


def _as_tree(denoiser: Any) -> tuple[list[Any], TreeStatic] | None:
    from ._denoisers import ModelDenoiser

    if isinstance(denoiser, ModelDenoiser) and denoiser.params is None:
        return None  # its parameters live in apply_fn: rule 2 finds them
    leaves, treedef = jax.tree_util.tree_flatten(denoiser)
    if jax.tree_util.treedef_is_leaf(treedef):
        return None
    arrays = [
        jnp.asarray(leaf) if isinstance(leaf, np.ndarray) else leaf for leaf in leaves if _is_array(leaf)
    ]
    static = TreeStatic(treedef, tuple(_ARRAY if _is_array(leaf) else leaf for leaf in leaves))
    try:
        hash(static)
    except TypeError:
        return None
    return arrays, static


class _Traced:
    """A traced denoiser inside the kernel: the computation evaluated on its arrays."""

    def __init__(self, static: TracedStatic, consts: list[Any]) -> None:
        self._static, self._consts = static, consts

    def _run(self, x: jax.Array, sigma: jax.Array) -> Any:
        want = self._static.avals
        if (x.shape, x.dtype, sigma.shape, sigma.dtype) != want:
            raise AssertionError(
                f"a traced denoiser called on {x.shape} {x.dtype} / {sigma.shape} {sigma.dtype}, "
                f"traced for {want}"
            )
        flat = jex.jaxpr_as_fun(jex.ClosedJaxpr(self._static.jaxpr, self._consts))(x, sigma)
        return jax.tree_util.tree_unflatten(self._static.out_tree, flat)

    def __call__(self, x: jax.Array, sigma: jax.Array) -> Any:
        return self._run(x, sigma)


class _GuidedTraced(_Traced):
    """A traced `cfg_denoiser`: its `(guided, unconditional)` pair, as the CFG++ samplers read it."""

    def with_uncond(self, x: jax.Array, sigma: jax.Array) -> Any:
        return self._run(x, sigma)

    def __call__(self, x: jax.Array, sigma: jax.Array) -> Any:
        return self._run(x, sigma)[0]


def _trace(fn: str, denoiser: Any, x: jax.ShapeDtypeStruct) -> tuple[list[Any], TracedStatic]:
    from ._sampling import call_denoiser, call_guided

    guided = callable(getattr(denoiser, "with_uncond", None))
    call = call_guided if guided else call_denoiser
    sigma = jax.ShapeDtypeStruct((x.shape[0],), x.dtype)
    before = _own_state(denoiser)
    try:
        with denoiser_errors(fn):
            closed, out_shape = jax.make_jaxpr(lambda v, s: call(fn, denoiser, v, s), return_shape=True)(
                x, sigma
            )
    finally:
        _refuse_self_changes(fn, before)
    closed = _inline_inner_consts(closed)
    out_tree = jax.tree_util.tree_structure(out_shape)
    keep: list[Any] = []
    digest = hashlib.sha256()
    digest.update(f"{guided}|{out_tree}|".encode())
    digest.update(str(closed.jaxpr).encode())
    _opaque_parts(closed.jaxpr, keep, digest)
    static = TracedStatic(
        digest.hexdigest(),
        closed.jaxpr,
        out_tree,
        guided,
        (x.shape, x.dtype, sigma.shape, sigma.dtype),
        tuple(keep),
    )
    return list(closed.consts), static


# ---- what the printed computation does not show ------------------------------------------------
# A jaxpr's text names callbacks and custom derivative rules but not which function they are,
# and shows the constants of an inner closed jaxpr by type only. Both enter the digest: the
# functions by identity (kept alive by the key, so an identity is never reused), an inner
# constant by its bytes (an inner `jax.jit` over arrays is inlined first, so its arrays become
# arguments; what is left is rare: a jitted closure over arrays inside a loop body).


def _opaque_parts(jaxpr: Any, keep: list[Any], digest: Any) -> None:
    for eqn in jaxpr.eqns:
        for name, value in sorted(eqn.params.items()):
            _opaque_value(f"{eqn.primitive.name}.{name}", value, keep, digest)


def _opaque_value(where: str, value: Any, keep: list[Any], digest: Any) -> None:
    if isinstance(value, jex.ClosedJaxpr):
        for c in value.consts:
            _const_bytes(where, c, keep, digest)
        _opaque_parts(value.jaxpr, keep, digest)
    elif isinstance(value, jex.Jaxpr):
        _opaque_parts(value, keep, digest)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _opaque_value(where, v, keep, digest)
    elif callable(value) and not isinstance(value, type):
        target = getattr(value, "callback_func", value)  # a callback's function, not its wrapper
        keep.append(target)
        digest.update(f"|{where}:{id(target)}".encode())


def _const_bytes(where: str, c: Any, keep: list[Any], digest: Any) -> None:
    try:
        data = np.asarray(c)
    except Exception:  # a tracer of the caller's trace: by identity
        keep.append(c)
        digest.update(f"|{where}:const@{id(c)}".encode())
        return
    digest.update(f"|{where}:{data.dtype}{data.shape}:".encode())
    digest.update(hashlib.sha256(np.ascontiguousarray(data).tobytes()).digest())


_INLINED = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr"}


def _has_inner_consts(closed: Any) -> bool:
    return any(
        isinstance(sub, jex.ClosedJaxpr) and (sub.consts or _has_inner_consts(sub))
        for eqn in closed.jaxpr.eqns
        for sub in eqn.params.values()
    )


def _inline_inner_consts(closed: Any) -> Any:
    """`closed` with every inner `jax.jit` (and closed call) that holds constants inlined, so
    those constants become the trace's own (arguments, not compiled in)."""
    if not _has_inner_consts(closed):
        return closed
    avals = [v.aval for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *args: _eval_inlining(closed.jaxpr, closed.consts, args))(*avals)


def _eval_inlining(jaxpr: Any, consts: Any, args: Any) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        sub = eqn.params.get(_INLINED.get(eqn.primitive.name, ""))
        if isinstance(sub, jex.ClosedJaxpr):
            outs = _eval_inlining(sub.jaxpr, sub.consts, invals)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) before JAX 0.7
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*subfuns, *invals, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, out in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jex.DropVar):
                env[v] = out
    return [read(v) for v in jaxpr.outvars]


# ---- rule 3: a denoiser does not change itself -------------------------------------------------


class _OwnState(NamedTuple):
    obj: Any  # the object whose attributes a call could rebind (a bound method's object), or None
    attrs: dict[str, Any]
    cells: list[tuple[str, Any, Any]]  # (free variable, cell, value)


def _own_state(denoiser: Any) -> _OwnState:
    """What a call could rebind: the object's attributes, a function's closure cells."""
    obj = denoiser.__self__ if hasattr(denoiser, "__func__") else denoiser
    func = getattr(denoiser, "__func__", denoiser)
    attrs = getattr(obj, "__dict__", None)
    cells = []
    names = getattr(getattr(func, "__code__", None), "co_freevars", ())
    for name, cell in zip(names, getattr(func, "__closure__", None) or (), strict=False):
        with contextlib.suppress(ValueError):  # an empty cell
            cells.append((name, cell, cell.cell_contents))
    if not isinstance(attrs, dict):
        return _OwnState(None, {}, cells)
    return _OwnState(obj, dict(attrs), cells)


def _refuse_self_changes(fn: str, before: _OwnState) -> None:
    changed = []
    if before.obj is not None:
        now = vars(before.obj)
        for name in list(now):
            if name not in before.attrs or now[name] is not before.attrs[name]:
                changed.append(f"denoiser.{name}")
        if changed or len(now) != len(before.attrs):
            changed += [f"denoiser.{n}" for n in before.attrs if n not in now]
            now.clear()
            now.update(before.attrs)
    for name, cell, value in before.cells:
        if cell.cell_contents is not value:
            changed.append(f"its closure's {name}")
            cell.cell_contents = value
    if changed:
        raise ValueError(
            f"{fn}: the denoiser rebinds {changed[0]} when called (put back); it is called once "
            "per call to trace it, not once per step, so a denoiser must not change itself: keep "
            "counters and caches outside it"
        )
