"""The Batch Unsampler node's latency on a real ComfyUI server, queue to result (issue 19).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_node.py

Starts ComfyUI (`main.py --cpu`, this repository as a node pack, the tests' tiny SD1.5
checkpoint; see tests/comfyui_server.py), queues the Batch Unsampler with 20 steps on a 64x64
latent (a 512 px EmptyLatentImage) and times, from POST /prompt to its /history entry: the first
run after ComfyUI starts, a second run (another seed: ComfyUI does not reuse the result), and
the first run after a restart that keeps ComfyUI's user folder (the node's compilation cache).
Beside them, the original BatchUnsampler's algorithm for the same work (KSampler's sigmas,
`repeat`, `randn_like`, multiply, add; its node fails on current ComfyUI, so it runs here in
torch, first call in a fresh process and steady). Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ORIGINAL = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, {tests!r})
from conftest import comfy_patcher, import_comfy
comfy = import_comfy({comfyui!r})
import torch
patcher = comfy_patcher(comfy, "sd15")

def original(seed):
    ks = comfy.samplers.KSampler(patcher, 20, "cpu", sampler="euler", scheduler="karras", denoise=1.0)
    sigmas = ks.sigmas[:20] / 0.18215
    x = torch.zeros(1, 4, 64, 64)
    torch.manual_seed(seed)
    z = x.repeat(20, 1, 1, 1)
    noise = torch.randn_like(z)
    return torch.flip(z + noise * sigmas.reshape(-1, 1, 1, 1), [0])

t1 = time.perf_counter(); original(0); first = time.perf_counter() - t1
runs = []
for seed in range(1, 21):
    t = time.perf_counter(); original(seed); runs.append(time.perf_counter() - t)
print(first, min(runs))
"""


def workflow(seed: int) -> dict:
    return {
        "1": {"class_type": "TinyModelForTests", "inputs": {"broken": False}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "3": {
            "class_type": "JaxUnsampler_BatchUnsampler",
            "inputs": {
                "model": ["1", 0],
                "latent_image": ["2", 0],
                "sampler_name": "euler",
                "scheduler": "karras",
                "steps": 20,
                "start_at_step": 0,
                "end_at_step": 10000,
                "normalize": False,
                "seed": seed,
                "noise_source": "jax",
                "mode": "node",
                "coupling": "independent",
            },
        },  # fmt: skip
        "4": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["3", 0], "filename_prefix": f"bench/{seed}"},
        },
    }


def timed_run(server, seed: int) -> float:
    from comfyui_server import request

    t0 = time.perf_counter()
    status, answer = request(server.url + "/prompt", {"prompt": workflow(seed)})
    assert status == 200 and answer["node_errors"] == {}, answer
    prompt_id = answer["prompt_id"]
    while True:
        _, history = request(f"{server.url}/history/{prompt_id}")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if entry and entry.get("status", {}).get("completed") is not None:
            assert entry["status"]["status_str"] == "success", entry["status"]
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > 600:
            raise TimeoutError(server.log_tail())
        time.sleep(0.02)


def main() -> None:
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        sys.exit(
            "bench_node.py: set COMFYUI_PATH to a ComfyUI checkout (a copy of ../shared/reference/ComfyUI)"
        )
    from comfyui_server import comfyui_server
    from conftest import import_comfy

    import_comfy(comfyui)  # the tiny checkpoint is written with ComfyUI's own modules
    os.environ.pop("JAX_UNSAMPLER_NODE_CACHE", None)  # the tests turn the cache off; measured here
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        first_base = pathlib.Path(tmp) / "first"
        with comfyui_server(first_base, comfyui) as server:
            rows.append(("first run after ComfyUI starts", timed_run(server, 1)))
            rows.append(("second run (another seed)", timed_run(server, 2)))
            rows.append(("third run (another seed)", timed_run(server, 3)))
        cache = first_base / "user" / "jax-unsampler-xla-cache"
        entries = len(list(cache.glob("*"))) if cache.is_dir() else 0
        print(
            f"node compilation cache after the first server: {entries} files in {cache.name}", file=sys.stderr
        )
        restart = pathlib.Path(tmp) / "restart"
        shutil.copytree(first_base / "user", restart / "user")  # ComfyUI's user folder: the cache
        with comfyui_server(restart, comfyui) as server:
            rows.append(("first run after a restart (compilation cache)", timed_run(server, 4)))
    code = ORIGINAL.format(tests=str(ROOT / "tests"), comfyui=comfyui)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, steady = (float(v) for v in out.stdout.split()[-2:])
    print("| Batch Unsampler, 20 steps, 64x64 latent (512 px), tiny SD1.5 | queue to result (s) |")
    print("| --- | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")
    print(f"| the original's algorithm in torch, first call in a fresh process | {first:.3f} |")
    print(f"| the original's algorithm in torch, steady | {steady:.4f} |")
    print(json.dumps(dict(rows)), file=sys.stderr)


if __name__ == "__main__":
    main()
