"""The V3-API node (`torch_bridge.comfy_v3`) and its shim.

The tests inside a real ComfyUI run only where COMFYUI_PATH names a checkout. They use the
`comfy` fixture of test_torch_bridge_comfyui.py (ComfyUI on sys.path, CPU only, torchvision
stand-ins). `comfy_api.latest` also imports PyAV (`av`) for video types the node never uses;
where it is not installed, a stand-in module of the same kind takes its place.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COMFY_FAMILIES, COMFYUI_PATH, DATA, comfy_patcher, needs_comfyui, stand_in_if_broken

import torch_bridge as tb

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def v3(comfy):
    """`torch_bridge.comfy_v3`, imported as inside ComfyUI."""
    stand_in_if_broken("av")
    import torch_bridge.comfy_v3

    return torch_bridge.comfy_v3


def _v1_view(spec: tuple) -> tuple:
    """An input spec as (type, options) with V1's combo-as-list spelled as V3 spells it."""
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if isinstance(kind, (list, tuple)):
        kind, options = "COMBO", {**options, "options": list(kind)}
    if options.get("multiselect") is False:  # V3 says so of every combo; V1 leaves it implied
        del options["multiselect"]
    return kind, options


@needs_comfyui
def test_schema_equals_the_v1_node(comfy, v3):  # noqa: F811
    from comfy_api.latest import io

    from torch_bridge import NODE_ID, BatchUnsamplerJax

    node = v3.BatchUnsamplerJaxV3
    schema = node.GET_SCHEMA()  # what ComfyUI's loader calls: validates the class and schema
    assert schema.node_id == v3.NODE_ID_V3 != NODE_ID
    assert schema.category == BatchUnsamplerJax.CATEGORY
    assert schema.description == BatchUnsamplerJax.DESCRIPTION
    want = BatchUnsamplerJax.INPUT_TYPES()
    got = node.INPUT_TYPES(include_hidden=False)  # V3 schema seen as V1 input types
    assert list(got) == list(want) == ["required", "optional"]
    for group in want:
        assert list(got[group]) == list(want[group]), group  # names and order
        for name in want[group]:
            assert _v1_view(got[group][name]) == _v1_view(want[group][name]), name
    inputs = {i.id: i for i in node.define_schema().inputs}
    assert isinstance(inputs["model"], io.Model.Input) and isinstance(inputs["latent_image"], io.Latent.Input)
    assert inputs["sampler_name"].options == list(comfy.samplers.KSampler.SAMPLERS)
    assert inputs["scheduler"].options == list(comfy.samplers.KSampler.SCHEDULERS)
    assert (inputs["steps"].default, inputs["steps"].min, inputs["steps"].max) == (10000, 0, 10000)
    assert (inputs["end_at_step"].default, inputs["end_at_step"].min) == (10000, 1)
    assert inputs["normalize"].default is False and not inputs["normalize"].optional
    seed = inputs["seed"]
    assert seed.optional and (seed.default, seed.max, seed.control_after_generate) == (0, 2**64 - 1, True)
    assert inputs["noise_source"].options == ["jax", "torch"] and inputs["noise_source"].default == "jax"
    assert inputs["mode"].default == "node" and inputs["coupling"].default == "independent"
    assert list(node.RETURN_TYPES) == list(BatchUnsamplerJax.RETURN_TYPES) == ["LATENT"]
    assert list(node.RETURN_NAMES) == list(BatchUnsamplerJax.RETURN_NAMES) == ["latent_batch"]


@needs_comfyui
def test_execute_matches_golden_with_torch_noise(comfy, v3):  # noqa: F811
    with np.load(DATA / "node_outputs.npz") as data:
        cases = json.loads(str(data["index"]))
        ran = 0
        for i, case in enumerate(cases):
            if case["family"] not in COMFY_FAMILIES or "error" in case:  # the 5-D case: see the V1 test
                continue
            x = torch.from_numpy(data[f"x{i}"])
            with torch.inference_mode():
                out = v3.BatchUnsamplerJaxV3.EXECUTE_NORMALIZED(  # how ComfyUI runs a V3 node
                    model=comfy_patcher(comfy, case["family"]), sampler_name=case["sampler"],
                    scheduler=case["scheduler"], steps=case["steps"], start_at_step=case["start_at_step"],
                    end_at_step=case["end_at_step"], latent_image={"samples": x},
                    normalize=case["normalize"], seed=case["seed"], noise_source="torch",
                )  # fmt: skip
            (latent,) = out.result
            want = data[f"z{i}"]
            z = latent["samples"].numpy()
            assert z.shape == want.shape, case
            assert np.max(np.abs(z - want)) <= 1e-6 * max(1.0, float(np.max(np.abs(want)))), case
            ran += 1
    assert ran >= 5


@needs_comfyui
def test_comfy_entrypoint_lists_the_node(comfy, v3):  # noqa: F811
    from comfy_api.latest import ComfyExtension

    async def load():  # as ComfyUI's custom-node loader does
        extension = await v3.comfy_entrypoint()
        assert isinstance(extension, ComfyExtension)
        await extension.on_load()
        return await extension.get_node_list()

    nodes = asyncio.run(load())
    assert nodes[0] is v3.BatchUnsamplerJaxV3
    assert nodes[0].GET_SCHEMA().display_name == v3.DISPLAY_NAME_V3
    # Every V1 node has its V3 twin: the V1 id and display name marked V3.
    assert [n.GET_SCHEMA().node_id for n in nodes] == [f"{k}V3" for k in tb.NODE_CLASS_MAPPINGS]
    names = [n.GET_SCHEMA().display_name for n in nodes]
    assert names == [v.removesuffix(")") + ", V3)" for v in tb.NODE_DISPLAY_NAME_MAPPINGS.values()]


@needs_comfyui
@pytest.mark.parametrize("v1_id", list(tb.NODE_CLASS_MAPPINGS))
def test_every_v3_schema_equals_its_v1_node(comfy, v3, v1_id):  # noqa: F811
    v1 = tb.NODE_CLASS_MAPPINGS[v1_id]
    node = v3.V3_NODES[f"{v1_id}V3"]
    schema = node.GET_SCHEMA()  # validates the class and schema, as ComfyUI's loader does
    assert (schema.category, schema.description) == (v1.CATEGORY, v1.DESCRIPTION)
    want, got = v1.INPUT_TYPES(), node.INPUT_TYPES(include_hidden=False)
    for group in ("required", "optional"):
        assert list(got.get(group, {})) == list(want.get(group, {})), group  # names and order
        for name in want.get(group, {}):
            assert _v1_view(got[group][name]) == _v1_view(want[group][name]), name
    assert list(node.RETURN_TYPES) == list(v1.RETURN_TYPES)
    assert list(node.RETURN_NAMES) == list(v1.RETURN_NAMES)


@needs_comfyui
def test_a_v3_mixing_node_computes_as_its_v1_node(comfy, v3):  # noqa: F811
    from comfy_models import NEG, POS, tiny_base_model

    model = tiny_base_model(comfy, "sd15")
    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    inputs = dict(
        model=model, positive=POS, negative=NEG, latent_image={"samples": x}, seed=3, steps=4, cfg=2.0,
        sampler_name="euler", scheduler="karras", denoise=1.0, alpha_1=2.4, blending_schedule="cosine",
        blending_function="addition", normalize_on_mean=False, noise_source="torch",
    )  # fmt: skip
    node = v3.V3_NODES["JaxUnsampler_IterativeMixingKSamplerV3"]
    with torch.inference_mode():
        (got,) = node.EXECUTE_NORMALIZED(**inputs).result
    (want,) = tb.IterativeMixingKSamplerJax().sample(**inputs)
    torch.testing.assert_close(got["samples"], want["samples"], rtol=0, atol=0)


@needs_comfyui
def test_the_v3_shim_loads_as_comfyui_loads_custom_nodes(comfy, v3, tmp_path):  # noqa: F811
    import torch_bridge

    (tmp_path / "custom_nodes").mkdir()
    shim = torch_bridge.install_comfyui_node(tmp_path, api="v3")
    spec = importlib.util.spec_from_file_location(
        "jax_unsampler_node_v3", shim, submodule_search_locations=[str(shim.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # else ComfyUI would load the V1 node instead
    assert module.comfy_entrypoint is v3.comfy_entrypoint


@needs_comfyui
def test_comfyuis_own_loader_registers_the_v3_shim(comfy, v3, tmp_path):  # noqa: F811
    try:
        import nodes  # ComfyUI's nodes.py: its custom-node loader and node registry
    except ImportError as err:  # a dependency of ComfyUI's start-up that this environment lacks
        pytest.skip(f"ComfyUI's nodes.py does not import here: {err}")

    (tmp_path / "custom_nodes").mkdir()
    shim = tb.install_comfyui_node(tmp_path, api="v3")
    assert asyncio.run(nodes.load_custom_node(str(shim.parent))) is True
    node = nodes.NODE_CLASS_MAPPINGS.pop(v3.NODE_ID_V3)
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS.pop(v3.NODE_ID_V3) == v3.DISPLAY_NAME_V3
    assert node is v3.BatchUnsamplerJaxV3 and tb.NODE_ID not in nodes.NODE_CLASS_MAPPINGS


def test_importing_torch_bridge_imports_no_comfy_api():
    """A fresh interpreter, with ComfyUI importable where COMFYUI_PATH is set."""
    code = (
        "import sys, torch_bridge\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy_api', 'comfy')"
        " or m == 'torch_bridge.comfy_v3']\n"
        "assert not bad, bad\n"
    )
    paths = [str(ROOT), *([str(Path(COMFYUI_PATH).expanduser())] if COMFYUI_PATH else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_install_api_v3_writes_the_entrypoint_shim_and_v1_stays_default(tmp_path):
    (tmp_path / "custom_nodes").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "torch_bridge", "install-comfyui-node", str(tmp_path), "--api", "v3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shim = tmp_path / "custom_nodes" / "jax_unsampler_node" / "__init__.py"
    assert str(shim) in done.stdout and "(jax-unsampler, V3)" in done.stdout
    text = shim.read_text()
    assert "from torch_bridge.comfy_v3 import comfy_entrypoint" in text and "NODE_CLASS_MAPPINGS" not in text
    compile(text, str(shim), "exec")
    # the default (an upgrade, or a change of mind) rewrites it as the V1 shim, and back
    assert tb.install_comfyui_node(tmp_path) == shim
    assert "from torch_bridge import NODE_CLASS_MAPPINGS" in shim.read_text()
    tb.install_comfyui_node(tmp_path / "custom_nodes", api="v3")
    assert shim.read_text() == text
    with pytest.raises(ValueError, match="unknown api 'v2'; valid choices: v1, v3"):
        tb.install_comfyui_node(tmp_path, api="v2")
    done = subprocess.run(
        [sys.executable, "-m", "torch_bridge", "install-comfyui-node", str(tmp_path), "--api", "v2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "invalid choice: 'v2'" in done.stderr
    assert shim.read_text() == text
