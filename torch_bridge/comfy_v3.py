"""The node for ComfyUI's newer node API (V3: `comfy_api.latest`), loaded by `comfy_entrypoint`.

The same node as `torch_bridge._node.BatchUnsamplerJax` (V1 API): its inputs are read from that
node's `INPUT_TYPES`, so names, defaults, ranges and tooltips cannot drift apart, and it
computes with the same function, `batch_unsample_comfy`.

This module imports `comfy_api`, so import it only inside ComfyUI; `import torch_bridge` never
imports it. ComfyUI reads V1 mappings before `comfy_entrypoint` when a module offers both, which
is why this lives apart from the V1 node.

Its id, `JaxUnsampler_BatchUnsamplerV3`, differs from the V1 node's: ComfyUI keeps one class per
id in a single registry, the last loaded silently replacing the other, and nothing stops both
shims from being installed (two `custom_nodes` folders, or a copy of one); distinct ids keep
both usable and show which API a workflow used. The cost: a workflow saved with one node opens
with the other missing; since the inputs are the same, replacing it keeps every widget value.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from ._node import BatchUnsamplerJax, batch_unsample_comfy

NODE_ID_V3 = "JaxUnsampler_BatchUnsamplerV3"
"""The V3 node's id: prefixed like the V1 node's, and distinct from it."""

DISPLAY_NAME_V3 = "Batch Unsampler (jax-unsampler, V3)"

_SOCKETS = {"MODEL": io.Model, "LATENT": io.Latent}
_WIDGETS = {"INT": io.Int, "BOOLEAN": io.Boolean}


def _v3_input(name: str, spec: tuple, optional: bool):
    """One V1 input spec (`(type,)` or `(type, options)`) as the V3 input that means the same."""
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if isinstance(kind, (list, tuple)):  # a V1 combo is its list of choices
        return io.Combo.Input(name, options=list(kind), optional=optional, **options)
    if kind in _SOCKETS:
        return _SOCKETS[kind].Input(name, optional=optional, **options)
    if kind in _WIDGETS:
        return _WIDGETS[kind].Input(name, optional=optional, **options)
    raise TypeError(f"{NODE_ID_V3}: no V3 input for the V1 input type {kind!r} of {name!r}")


def v3_inputs() -> list:
    """The V1 node's inputs, in its order, as V3 inputs (`optional` ones marked so)."""
    spec = BatchUnsamplerJax.INPUT_TYPES()
    return [
        _v3_input(name, value, group == "optional")
        for group in ("required", "optional")
        for name, value in spec.get(group, {}).items()
    ]


class BatchUnsamplerJaxV3(io.ComfyNode):
    """V3 ComfyUI node: the BatchUnsampler of ComfyUI-Iterative-Mixer (see `BatchUnsamplerJax`)."""

    @classmethod
    def define_schema(cls):
        (name,) = BatchUnsamplerJax.RETURN_NAMES
        return io.Schema(
            node_id=NODE_ID_V3,
            display_name=DISPLAY_NAME_V3,
            category=BatchUnsamplerJax.CATEGORY,
            description=BatchUnsamplerJax.DESCRIPTION,
            inputs=v3_inputs(),
            outputs=[io.Latent.Output(name, display_name=name)],
        )

    @classmethod
    def execute(cls, **inputs):
        # ComfyUI passes every input by name; they are the V1 node's, so its compute serves.
        return io.NodeOutput(batch_unsample_comfy(**inputs))


class JaxUnsamplerExtension(ComfyExtension):
    """The extension ComfyUI gets from `comfy_entrypoint`: this package's V3 nodes."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [BatchUnsamplerJaxV3]


async def comfy_entrypoint() -> JaxUnsamplerExtension:
    """What ComfyUI calls (and awaits) when it loads a V3 custom node module."""
    return JaxUnsamplerExtension()
