"""A real ComfyUI server for the tests, with this repository installed as a node pack.

`comfyui_server(base)` starts ComfyUI's `main.py --cpu` (tests/comfyui_main.py) on a free
127.0.0.1 port with the base directory `base`, holding:

- `custom_nodes/jax-unsampler`: `git archive HEAD` of this repository (what a clone puts there);
- `custom_nodes/tiny_model_for_tests.py`: the test-only nodes (tests/comfyui_tiny_model_node.py);
- `models/checkpoints/v1-5-pruned-emaonly.safetensors`: a tiny random SD1.5 checkpoint
  (`write_tiny_checkpoint`: a one-level UNet, a TAESD VAE and a random CLIP-L text encoder)
  under the name the example workflows use, so that they run unchanged;
- `input/example.png`: a small picture under the name the example workflows load.

The server is stopped (SIGINT, then SIGKILL of its own process group) when the context ends;
every wait is bounded. Needs COMFYUI_PATH (the callers are skipped without it).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PACK_NAME = "jax-unsampler"
CHECKPOINT_NAME = "v1-5-pruned-emaonly.safetensors"  # the example workflows' checkpoint
IMAGE_NAME = "example.png"  # and their picture
START_TIMEOUT_S = 300  # ComfyUI imports torch and its nodes on a small shared CPU
RUN_TIMEOUT_S = 300  # the first run of a node imports and compiles JAX
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or sys.executable
"""The Python that runs the server: ComfyUI's own environment with the pack installed as
docs/comfyui.md says (ComfyUI's requirements, then only the pack's requirements.txt), which
.ci/run makes and names here; the tests' own Python where it is not set."""


def environment(**extra: str) -> dict[str, str]:
    """The test's environment without PYTHONPATH (the worktree must not stand in for the copy)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAX_UNSAMPLER_NODE_API")}
    return {**env, **extra}


def git_archive_pack(custom_nodes: pathlib.Path) -> pathlib.Path:
    """`git archive HEAD` of this repository unpacked as `custom_nodes/jax-unsampler`."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of this repository")
    custom_nodes.mkdir(parents=True, exist_ok=True)
    archive = custom_nodes.parent / "pack.tar"
    command = ["git", "archive", "--format=tar", "-o", str(archive), "HEAD"]
    subprocess.run(command, cwd=ROOT, check=True, timeout=120)
    pack = custom_nodes / PACK_NAME
    pack.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(pack, filter="data")
    archive.unlink()
    return pack


def write_tiny_checkpoint(path: pathlib.Path) -> pathlib.Path:
    """A checkpoint ComfyUI loads as SD1.5 (its detection reads the UNet's shapes): a UNet of one
    level (320 channels, one cross-attention block), a TAESD VAE and SD1.5's text encoder (CLIP-L,
    the size ComfyUI builds), with seeded random weights. Needs ComfyUI imported
    (`conftest.import_comfy`)."""
    import comfy.ops
    import comfy.sd1_clip
    import comfy.utils
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.taesd.taesd import TAESD

    generator = torch.Generator().manual_seed(0)
    unet = UNetModel(
        image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
        channel_mult=[1], transformer_depth=[1], transformer_depth_output=[1, 1],
        transformer_depth_middle=1, num_heads=8, context_dim=768, use_linear_in_transformer=False,
        adm_in_channels=None, dtype=torch.float32, operations=comfy.ops.manual_cast,
        use_spatial_transformer=True,
    )  # fmt: skip
    vae = TAESD()
    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    # The text encoder at SD1.5's size (ComfyUI builds CLIP-L from its own config).
    clip = comfy.sd1_clip.SDClipModel(device="cpu").transformer.state_dict()
    state.update({f"cond_stage_model.transformer.{k}": v for k, v in clip.items()})
    for key, value in state.items():
        if value.dtype.is_floating_point and value.ndim:
            scale = 0.2 if "first_stage" in key else 0.02
            state[key] = torch.randn(value.shape, generator=generator) * scale
            if (
                key.endswith(("norm1.weight", "norm2.weight", "final_layer_norm.weight"))
                and "cond_stage" in key
            ):
                state[key] = state[key] + 1.0  # layer norms near the identity
    state = {k: v.to(torch.float16).contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    comfy.utils.save_torch_file(state, str(path))
    return path


def write_example_image(path: pathlib.Path, size: int = 64) -> pathlib.Path:
    """A small RGB gradient picture."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, payload: dict | None = None, timeout: float = 30.0) -> tuple[int, object]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@contextlib.contextmanager
def comfyui_server(base: pathlib.Path, comfyui_path: str) -> Iterator[types.SimpleNamespace]:
    """ComfyUI serving `base` (laid out as the module docstring says) until the context ends."""
    custom = base / "custom_nodes"
    git_archive_pack(custom)
    shutil.copy(TESTS / "comfyui_tiny_model_node.py", custom / "tiny_model_for_tests.py")
    write_tiny_checkpoint(base / "models" / "checkpoints" / CHECKPOINT_NAME)
    write_example_image(base / "input" / IMAGE_NAME)
    port = _free_port()
    log_path = base / "server.log"
    command = [
        COMFYUI_PYTHON, str(TESTS / "comfyui_main.py"), comfyui_path, "--cpu",
        "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
        "--database-url", "sqlite:///:memory:", "--disable-auto-launch",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=base, env=environment(),
            start_new_session=True,  # its own process group, for the kill below
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{log_tail()}")
            try:
                if request(url + "/system_stats", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S} s:\n{log_tail()}")
            time.sleep(1.0)
        yield types.SimpleNamespace(url=url, base=base, log_tail=log_tail)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C does: ComfyUI shuts down
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only its processes
                process.wait(timeout=30)


def wait_for_history(server, prompt_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    """The /history entry of `prompt_id` once it has finished (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, history = request(f"{server.url}/history/{prompt_id}")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if entry and entry.get("status", {}).get("completed") is not None:
            if entry["status"]["status_str"] in ("success", "error"):
                return entry
        time.sleep(0.5)
    pytest.fail(f"no result for {prompt_id} within {timeout} s:\n{server.log_tail()}")


def run_prompt(server, prompt: dict) -> dict:
    """POSTs an API-format workflow and waits (bounded) for its /history entry."""
    status, answer = request(server.url + "/prompt", {"prompt": prompt})
    assert status == 200 and answer["node_errors"] == {}, answer
    return wait_for_history(server, answer["prompt_id"])


def pack_node_ids(server) -> list[str]:
    """The ids of every node the server loaded from this pack (its /object_info)."""
    status, info = request(server.url + "/object_info", timeout=60)
    assert status == 200
    return sorted(k for k, v in info.items() if v.get("python_module") == f"custom_nodes.{PACK_NAME}")
