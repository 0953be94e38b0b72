"""The nodes for ComfyUI's newer node API (V3: `comfy_api.latest`), loaded by `comfy_entrypoint`.

Every V1 node of the package (`torch_bridge.NODE_CLASS_MAPPINGS`) has its V3 twin here: its
inputs are read from the V1 node's `INPUT_TYPES`, so names, defaults, ranges and tooltips
cannot drift apart, and it computes with the same function.

This module imports `comfy_api`, so import it only inside ComfyUI; `import torch_bridge` never
imports it. ComfyUI reads V1 mappings before `comfy_entrypoint` when a module offers both, which
is why this lives apart from the V1 node.

Each V3 id is the V1 id plus `V3` (`JaxUnsampler_BatchUnsamplerV3`), distinct from the V1
node's: ComfyUI keeps one class per id in a single registry, the last loaded silently replacing
the other, and nothing stops both shims from being installed (two `custom_nodes` folders, or a
copy of one); distinct ids keep both usable and show which API a workflow used. The cost: a
workflow saved with one node opens with the other missing; since the inputs are the same,
replacing it keeps every widget value.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import ComfyExtension, io

from . import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from ._node import NODE_ID, BatchUnsamplerJax

NODE_ID_V3 = "JaxUnsampler_BatchUnsamplerV3"
"""The V3 Batch Unsampler's id: prefixed like the V1 node's, and distinct from it."""

DISPLAY_NAME_V3 = "Batch Unsampler (jax-unsampler, V3)"

_SOCKETS = {
    "MODEL": io.Model,
    "LATENT": io.Latent,
    "CONDITIONING": io.Conditioning,
    "IMAGE": io.Image,
    "SAMPLER": io.Sampler,
}
_WIDGETS = {"INT": io.Int, "BOOLEAN": io.Boolean, "FLOAT": io.Float}


def v3_id(v1_id: str) -> str:
    """A V1 node's V3 id (`..._BatchUnsampler` -> `..._BatchUnsamplerV3`)."""
    return f"{v1_id}V3"


def v3_display_name(v1_name: str) -> str:
    """A V1 node's V3 display name (`Batch Unsampler (jax-unsampler)` -> `... (jax-unsampler, V3)`)."""
    return v1_name.removesuffix(")") + ", V3)"


def _v3_input(name: str, spec: tuple, optional: bool, node_id: str = NODE_ID_V3):
    """One V1 input spec (`(type,)` or `(type, options)`) as the V3 input that means the same."""
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if isinstance(kind, (list, tuple)):  # a V1 combo is its list of choices
        return io.Combo.Input(name, options=list(kind), optional=optional, **options)
    if kind in _SOCKETS:
        return _SOCKETS[kind].Input(name, optional=optional, **options)
    if kind in _WIDGETS:
        return _WIDGETS[kind].Input(name, optional=optional, **options)
    raise TypeError(f"{node_id}: no V3 input for the V1 input type {kind!r} of {name!r}")


def v3_inputs(v1_class: Any = BatchUnsamplerJax, node_id: str = NODE_ID_V3) -> list:
    """A V1 node's inputs, in its order, as V3 inputs (`optional` ones marked so)."""
    spec = v1_class.INPUT_TYPES()
    return [
        _v3_input(name, value, group == "optional", node_id)
        for group in ("required", "optional")
        for name, value in spec.get(group, {}).items()
    ]


def v3_node(v1_id: str) -> type[io.ComfyNode]:
    """The V3 node of the V1 node `v1_id`: the same inputs (read from its `INPUT_TYPES`, so they
    cannot drift apart), outputs, category and description, computed by the V1 node's function."""
    v1_class: Any = NODE_CLASS_MAPPINGS[v1_id]
    node_id, display_name = v3_id(v1_id), v3_display_name(NODE_DISPLAY_NAME_MAPPINGS[v1_id])

    def define_schema(cls):
        outputs = [
            _SOCKETS[kind].Output(name, display_name=name)
            for kind, name in zip(v1_class.RETURN_TYPES, v1_class.RETURN_NAMES, strict=True)
        ]
        return io.Schema(
            node_id=node_id,
            display_name=display_name,
            category=v1_class.CATEGORY,
            description=v1_class.DESCRIPTION,
            inputs=v3_inputs(v1_class, node_id),
            outputs=outputs,
        )

    def execute(cls, **inputs):
        # ComfyUI passes every input by name; they are the V1 node's, so its function serves.
        return io.NodeOutput(*getattr(v1_class(), v1_class.FUNCTION)(**inputs))

    name = v1_class.__name__ + "V3"
    doc = f"V3 ComfyUI node: {v1_class.__doc__ or display_name}"
    namespace = {"__doc__": doc, "__module__": __name__, "__qualname__": name,
                 "define_schema": classmethod(define_schema), "execute": classmethod(execute)}  # fmt: skip
    return type(name, (io.ComfyNode,), namespace)


V3_NODES: dict[str, type[io.ComfyNode]] = {v3_id(k): v3_node(k) for k in NODE_CLASS_MAPPINGS}
"""Every V3 node of the package, by id, in the V1 nodes' order."""

BatchUnsamplerJaxV3 = V3_NODES[NODE_ID_V3]
assert NODE_ID_V3 == v3_id(NODE_ID)


class JaxUnsamplerExtension(ComfyExtension):
    """The extension ComfyUI gets from `comfy_entrypoint`: this package's V3 nodes."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(V3_NODES.values())


async def comfy_entrypoint() -> JaxUnsamplerExtension:
    """What ComfyUI calls (and awaits) when it loads a V3 custom node module."""
    return JaxUnsamplerExtension()
