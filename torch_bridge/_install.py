"""`python -m torch_bridge install-comfyui-node COMFYUI_DIR`: make ComfyUI load the node.

ComfyUI loads nodes only from folders under `custom_nodes/`; it cannot load them from an
installed package by entry point. This writes a two-line shim folder there that imports the
node from the installed `torch_bridge` package, so upgrading the package upgrades the node.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHIM_DIR = "jax_unsampler_node"
MARKER = "# written by: python -m torch_bridge install-comfyui-node"
SHIM = f'''"""ComfyUI loader of the jax-unsampler BatchUnsampler node (the code lives in torch_bridge)."""

{MARKER}
from torch_bridge import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
'''
SHIM_V3 = f'''"""ComfyUI V3-API loader of the jax-unsampler BatchUnsampler node (code: torch_bridge)."""

{MARKER}
from torch_bridge.comfy_v3 import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
'''
SHIMS = {"v1": SHIM, "v3": SHIM_V3}
"""The shim of each node API: V1 (`NODE_CLASS_MAPPINGS`) or V3 (`comfy_entrypoint`)."""


def install_comfyui_node(comfyui_dir, force: bool = False, api: str = "v1") -> Path:
    """Write the shim `custom_nodes/jax_unsampler_node/__init__.py` into a ComfyUI checkout.

    **Arguments:**

    - `comfyui_dir`: the ComfyUI folder (the one holding `custom_nodes/`), or its
      `custom_nodes` folder itself.
    - `force`: overwrite an `__init__.py` there that this command did not write.
    - `api`: `"v1"` (the node as `NODE_CLASS_MAPPINGS`) or `"v3"` (ComfyUI's newer node API:
      `comfy_entrypoint` of `torch_bridge.comfy_v3`, node id `JaxUnsampler_BatchUnsamplerV3`).
      Either replaces the other, as both use the same folder.

    **Returns:** the path of the written file. Raises `ValueError` when the folder has no
    `custom_nodes/`, or a foreign `__init__.py` is in the way and `force` is false.
    """
    fn = "install_comfyui_node"
    if api not in SHIMS:
        raise ValueError(f"{fn}: unknown api {api!r}; valid choices: {', '.join(SHIMS)}")
    root = Path(comfyui_dir).expanduser()
    custom = root if root.name == "custom_nodes" and root.is_dir() else root / "custom_nodes"
    if not custom.is_dir():
        raise ValueError(
            f"{fn}: {str(root)!r} is not a ComfyUI folder: it has no custom_nodes/ folder "
            "(pass the folder that holds ComfyUI's main.py, or its custom_nodes/)"
        )
    target = custom / SHIM_DIR / "__init__.py"
    if target.exists() and not force and MARKER not in target.read_text(errors="replace"):
        raise ValueError(f"{fn}: {str(target)!r} exists and was not written by this command; pass --force")
    target.parent.mkdir(exist_ok=True)
    target.write_text(SHIMS[api])
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_bridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser(
        "install-comfyui-node",
        help="write a custom_nodes/ shim so ComfyUI loads the node from this installed package",
    )
    install.add_argument("comfyui_dir", help="the ComfyUI folder (holding custom_nodes/)")
    install.add_argument("--force", action="store_true", help="overwrite a foreign shim file")
    install.add_argument(
        "--api", choices=tuple(SHIMS), default="v1",
        help="ComfyUI node API of the shim: v1 (NODE_CLASS_MAPPINGS, default) or v3 (comfy_entrypoint)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        path = install_comfyui_node(args.comfyui_dir, force=args.force, api=args.api)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = "Batch Unsampler (jax-unsampler, V3)" if args.api == "v3" else "Batch Unsampler (jax-unsampler)"
    print(f"wrote {path}\nRestart ComfyUI; the node is '{name}' under latent/.")
    return 0
