"""Loads a node pack folder with ComfyUI's own custom-node loader and reports, as JSON on stdout,
what it got: `python comfyui_load_node_pack.py COMFYUI_PATH PACK_DIR OUT_NPZ`.

Run by tests/test_comfyui_node_pack.py in a fresh interpreter, so that nothing the test process
imported (this worktree's `jax_unsampler` and `torch_bridge`) can stand in for the copy. It
imports ComfyUI (`nodes`, on the CPU, `conftest.import_comfy`), awaits `nodes.load_custom_node`
on the folder, then runs the loaded node class on a ComfyUI SD1.5 ModelPatcher
(`conftest.comfy_patcher`) with the original's torch noise and saves the output and ComfyUI's
KSampler sigmas to OUT_NPZ; it also reports the INPUT_TYPES of the nodes the example workflows
use.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import comfy_patcher, import_comfy, run_node, stand_in_if_broken

    comfyui, pack, out = sys.argv[1:4]
    comfy = import_comfy(comfyui)
    stand_in_if_broken("torchaudio", "kornia", "spandrel", "av")
    import nodes
    import torch

    before = set(nodes.NODE_CLASS_MAPPINGS)
    loaded = asyncio.run(nodes.load_custom_node(pack, set(before)))
    added = sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
    report: dict = {
        "loaded": loaded,
        "added": added,
        "display_names": {k: nodes.NODE_DISPLAY_NAME_MAPPINGS.get(k) for k in added},
        "files": {
            m: getattr(sys.modules.get(m), "__file__", None) for m in ("jax_unsampler", "torch_bridge")
        },
        "jax_after_load": "jax" in sys.modules,
    }
    if added and "JaxUnsampler_BatchUnsampler" in added:
        cls = nodes.NODE_CLASS_MAPPINGS["JaxUnsampler_BatchUnsampler"]
        x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(5))
        patcher = comfy_patcher(comfy, "sd15")
        (latent,) = run_node(cls, patcher, "euler", "karras", 6, 0, 10000, {"samples": x}, False, seed=11,
                             noise_source="torch")  # fmt: skip
        ks = comfy.samplers.KSampler(patcher, 6, "cpu", sampler="euler", scheduler="karras", denoise=1.0)
        import numpy as np

        np.savez(out, x=x.numpy(), z=latent["samples"].numpy(), ksampler_sigmas=ks.sigmas.float().numpy())
        report["jax_after_run"] = "jax" in sys.modules
    types = {}
    for name in sys.argv[4:]:
        cls = nodes.NODE_CLASS_MAPPINGS.get(name)
        types[name] = None if cls is None else {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES)}
    report["input_types"] = types
    print("REPORT " + json.dumps(report, default=str))
