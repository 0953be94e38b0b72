"""`python -m torch_bridge install-comfyui-node`: the custom_nodes shim."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import torch_bridge as tb

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("jax_unsampler_node_shim", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_writes_a_shim_that_exports_the_node(tmp_path):
    (tmp_path / "custom_nodes").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "torch_bridge", "install-comfyui-node", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shim = tmp_path / "custom_nodes" / "jax_unsampler_node" / "__init__.py"
    assert str(shim) in done.stdout
    module = _load(shim)
    assert module.NODE_CLASS_MAPPINGS is tb.NODE_CLASS_MAPPINGS
    assert module.NODE_DISPLAY_NAME_MAPPINGS is tb.NODE_DISPLAY_NAME_MAPPINGS
    # running it again (an upgrade) rewrites its own file; the custom_nodes folder works too
    assert tb.install_comfyui_node(tmp_path / "custom_nodes") == shim


def test_refuses_a_folder_without_custom_nodes_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="is not a ComfyUI folder: it has no custom_nodes/"):
        tb.install_comfyui_node(tmp_path)
    shim = tmp_path / "custom_nodes" / "jax_unsampler_node" / "__init__.py"
    shim.parent.mkdir(parents=True)
    shim.write_text("# somebody else's node\n")
    with pytest.raises(ValueError, match="was not written by this command; pass --force"):
        tb.install_comfyui_node(tmp_path)
    assert shim.read_text() == "# somebody else's node\n"
    tb.install_comfyui_node(tmp_path, force=True)
    assert "from torch_bridge import NODE_CLASS_MAPPINGS" in shim.read_text()
    done = subprocess.run(
        [sys.executable, "-m", "torch_bridge", "install-comfyui-node", str(tmp_path / "nowhere")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "error: install_comfyui_node:" in done.stderr
