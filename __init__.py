"""This checkout as a ComfyUI node pack: ComfyUI runs this file from `custom_nodes/<folder>/`.

ComfyUI-Manager, `comfy node install` and `git clone` all put the repository's root folder into
`custom_nodes/`, and ComfyUI's loader executes its `__init__.py` and reads
`NODE_CLASS_MAPPINGS` and `NODE_DISPLAY_NAME_MAPPINGS` (the V1 node). With the environment
variable `JAX_UNSAMPLER_NODE_API=v3` it offers `comfy_entrypoint` instead (the V3 node,
`torch_bridge.comfy_v3`).

- **Nothing happens at import.** The names are resolved on first access (PEP 562), so importing
  this file loads neither torch nor JAX nor the packages. That keeps it harmless where something
  else imports it: pytest imports the `__init__.py` of every package folder on the way to a test,
  and this folder is one. Reading the node imports torch and `torch_bridge`; JAX still loads only
  when the node first runs.
- **This checkout wins.** `jax_unsampler` and `torch_bridge` are imported from this folder, never
  from a copy pip installed elsewhere (which may be older): a finder placed first on
  `sys.meta_path` answers for exactly those two names. Nothing is added to `sys.path`. If
  another copy was imported before (a second clone, or the `install-comfyui-node` shim of a pip
  install loaded first), reading the node raises `ImportError` naming both folders, so ComfyUI
  reports this folder as failed instead of silently running the other copy.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

HERE = os.path.dirname(os.path.realpath(__file__))
PACKAGES = ("jax_unsampler", "torch_bridge")
"""The packages this checkout provides; they are imported from here and nowhere else."""

API_VARIABLE = "JAX_UNSAMPLER_NODE_API"
APIS = {
    "v1": ("torch_bridge", ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")),
    "v3": ("torch_bridge.comfy_v3", ("comfy_entrypoint",)),
}
"""Node API -> (module with the node, the names ComfyUI reads from this file)."""


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds `PACKAGES` in one folder only (their submodules follow their `__path__`)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in PACKAGES:
            return None
        return importlib.machinery.PathFinder.find_spec(name, [self.folder])


def _copy_of(name: str) -> str | None:
    """The folder an already-imported `name` came from, if that is not this checkout."""
    module = sys.modules.get(name)
    if module is None:
        return None
    origin = os.path.realpath(os.path.dirname(getattr(module, "__file__", None) or "?"))
    return None if origin == os.path.join(HERE, name) else origin


def _node_module(api: str) -> ModuleType:
    """The module holding the node of `api`, imported from this checkout."""
    for name in PACKAGES:
        other = _copy_of(name)
        if other is not None:
            raise ImportError(
                f"jax-unsampler: {HERE} cannot load its node: {name} was already imported from {other} "
                "(another copy of this node pack); keep one: remove the other custom_nodes folder, "
                "or `pip uninstall jax-unsampler` and delete its custom_nodes/jax_unsampler_node shim"
            )
    if not any(isinstance(f, CheckoutFinder) and f.folder == HERE for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFinder(HERE))
    try:
        return importlib.import_module(APIS[api][0])
    except AttributeError as err:  # hasattr() would swallow it and ComfyUI would see no node
        raise ImportError(f"jax-unsampler: importing {APIS[api][0]} failed: {err}") from err


def __getattr__(name: str) -> Any:
    if not any(name in names for _, names in APIS.values()):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    api = os.environ.get(API_VARIABLE, "v1")
    if api not in APIS:
        raise ValueError(f"jax-unsampler: {API_VARIABLE}={api!r} is not a node API; valid choices: v1, v3")
    if name not in APIS[api][1]:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} ({API_VARIABLE}={api})")
    value = getattr(_node_module(api), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    api = os.environ.get(API_VARIABLE, "v1")
    return sorted([*globals(), *APIS.get(api, APIS["v1"])[1]])
