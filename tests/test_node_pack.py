"""The repository as a ComfyUI node pack, without ComfyUI: the root `__init__.py` (loaded from a
scratch folder as ComfyUI's loader loads it), the Comfy Registry metadata in pyproject.toml,
requirements.txt and the example workflows. tests/test_comfyui_node_pack.py does the same
inside a real ComfyUI (COMFYUI_PATH).

The root module is loaded in fresh interpreters: this process already imported the worktree's
packages, which is exactly the situation the root module refuses (another copy imported).
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from ui_workflows import check_workflow, example_workflows

import jax_unsampler as ju

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE_ID = "JaxUnsampler_BatchUnsampler"
NODES = {  # every V1 node of the pack: id -> (module, display name)
    NODE_ID: ("torch_bridge._node", "Batch Unsampler (jax-unsampler)"),
    "JaxUnsampler_InvertedBatchUnsampler": (
        "torch_bridge._inversion_node",
        "Inverted Batch Unsampler (jax-unsampler)",
    ),
    "JaxUnsampler_LatentBatchStatistics": (
        "torch_bridge._stats_node",
        "Latent Batch Statistics (jax-unsampler)",
    ),
    "JaxUnsampler_IterativeMixingKSampler": (
        "torch_bridge._mixing_node",
        "Iterative Mixing KSampler (jax-unsampler)",
    ),
    "JaxUnsampler_IterativeMixingKSamplerAdvanced": (
        "torch_bridge._mixing_node",
        "Iterative Mixing KSampler Advanced (jax-unsampler)",
    ),
    "JaxUnsampler_IterativeMixingSampler": (
        "torch_bridge._mixing_node",
        "Iterative Mixing Sampler (jax-unsampler)",
    ),
}


def scratch_pack(tmp_path: pathlib.Path, name: str = "jax-unsampler.main") -> pathlib.Path:
    """This checkout's node pack (root `__init__.py` and both packages) under a scratch
    `custom_nodes/`; the dot in the name is one ComfyUI's loader rewrites in module names."""
    pack = tmp_path / "custom_nodes" / name
    pack.mkdir(parents=True)
    shutil.copy(ROOT / "__init__.py", pack)
    for package in ("jax_unsampler", "torch_bridge"):
        shutil.copytree(ROOT / package, pack / package, ignore=shutil.ignore_patterns("__pycache__"))
    return pack


# Loads PACK/__init__.py exactly as ComfyUI's nodes.load_custom_node does, runs BODY, prints JSON.
PROBE = """
import importlib.util, json, os, sys
pack = {pack!r}
before = list(sys.meta_path)
{prelude}
name = pack.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, os.path.join(pack, "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
out = {{}}
out["loaded_at_import"] = sorted(
    m for m in ("torch", "jax", "jax_unsampler", "torch_bridge", "numpy") if m in sys.modules
)
out["meta_path_unchanged"] = sys.meta_path == before
out["pytest_hooks"] = [hasattr(module, n) for n in ("setup_module", "setUpModule", "teardown_module")]
{body}
print("REPORT " + json.dumps(out))
"""


def probe(pack: pathlib.Path, body: str = "", prelude: str = "", env: dict | None = None) -> dict:
    code = PROBE.format(pack=str(pack), prelude=prelude, body=textwrap.dedent(body))
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAX_UNSAMPLER_NODE_API")}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=pack.parent,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    return json.loads(line.removeprefix("REPORT "))


def test_importing_the_root_module_does_nothing(tmp_path):
    # What pytest does to it (it imports every package's __init__.py on the way to a test) and
    # the first thing ComfyUI does: no torch, no JAX, no packages, no import hooks yet.
    out = probe(scratch_pack(tmp_path), body="out['dir'] = dir(module)")
    assert out["loaded_at_import"] == []
    assert out["meta_path_unchanged"]
    assert out["pytest_hooks"] == [False, False, False]
    assert {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"} <= set(out["dir"])


OLD_COPY = {
    "jax_unsampler/__init__.py": '__version__ = "0.0.1"\n',
    "torch_bridge/__init__.py": 'NODE_CLASS_MAPPINGS = {"Old": object}\nNODE_DISPLAY_NAME_MAPPINGS = {}\n',
}


def test_the_checkout_wins_over_an_older_installed_copy(tmp_path):
    pytest.importorskip("torch")
    pack = scratch_pack(tmp_path)
    site = tmp_path / "site-packages"  # an older jax-unsampler, first on the path
    for path, text in OLD_COPY.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(text)
    body = """
    mappings = module.NODE_CLASS_MAPPINGS
    import jax_unsampler, torch_bridge
    out["nodes"] = {k: v.__module__ for k, v in mappings.items()}
    out["display"] = module.NODE_DISPLAY_NAME_MAPPINGS
    out["files"] = [jax_unsampler.__file__, torch_bridge.__file__]
    out["jax_loaded"] = "jax" in sys.modules
    out["comfy_entrypoint"] = hasattr(module, "comfy_entrypoint")
    """
    out = probe(pack, body, env={"PYTHONPATH": str(site)})
    assert out["nodes"] == {k: module for k, (module, _) in NODES.items()}
    assert out["display"] == {k: name for k, (_, name) in NODES.items()}
    assert out["files"] == [
        str(pack / "jax_unsampler" / "__init__.py"),
        str(pack / "torch_bridge" / "__init__.py"),
    ]
    assert not out["jax_loaded"]  # the node loads without JAX
    assert not out["comfy_entrypoint"]  # V1 by default: ComfyUI would prefer NODE_CLASS_MAPPINGS anyway


def test_another_copy_imported_first_is_a_loud_error(tmp_path):
    pytest.importorskip("torch")
    pack = scratch_pack(tmp_path)
    body = """
    try:
        module.NODE_CLASS_MAPPINGS
    except ImportError as err:
        out["error"] = str(err)
    """
    out = probe(pack, body, prelude="import torch_bridge", env={"PYTHONPATH": str(ROOT)})
    error = out["error"]
    assert "\n" not in error
    # torch_bridge imports jax_unsampler, so both are there; the first one checked is named.
    assert error.startswith(f"jax-unsampler: {pack} cannot load its node: jax_unsampler was already imported")
    assert f"from {ROOT / 'jax_unsampler'} (another copy" in error and "keep one" in error


def test_the_same_copy_imported_first_is_fine_even_through_a_symlink(tmp_path):
    # A developer's set-up: custom_nodes/jax-unsampler is a symlink to the clone, which is also
    # `pip install -e`'d (so its packages may be imported before ComfyUI reaches the folder).
    pytest.importorskip("torch")
    real = scratch_pack(tmp_path / "src", "jax-unsampler")
    link = tmp_path / "custom_nodes" / "jax-unsampler"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    body = """
    import torch_bridge
    out["same"] = module.NODE_CLASS_MAPPINGS is torch_bridge.NODE_CLASS_MAPPINGS
    """
    out = probe(link, body, prelude="import torch_bridge", env={"PYTHONPATH": str(real)})
    assert out["same"] is True


def test_node_api_variable(tmp_path):
    pack = scratch_pack(tmp_path)
    body = """
    out["v1_names"] = [hasattr(module, "NODE_CLASS_MAPPINGS"), hasattr(module, "NODE_DISPLAY_NAME_MAPPINGS")]
    out["loaded"] = sorted(m for m in ("torch", "torch_bridge") if m in sys.modules)
    """
    out = probe(pack, body, env={"JAX_UNSAMPLER_NODE_API": "v3"})
    assert out["v1_names"] == [False, False] and out["loaded"] == []  # ComfyUI goes on to comfy_entrypoint
    body = """
    try:
        module.NODE_CLASS_MAPPINGS
    except ValueError as err:
        out["error"] = str(err)
    """
    out = probe(pack, body, env={"JAX_UNSAMPLER_NODE_API": "v2"})
    assert (
        out["error"] == "jax-unsampler: JAX_UNSAMPLER_NODE_API='v2' is not a node API; valid choices: v1, v3"
    )


def test_wheel_holds_the_packages_and_not_the_root_module(tmp_path):
    # `pip install .` / `pip install -e .` install the two packages; the root __init__.py is
    # only for custom_nodes/ and must not become a top-level module of the distribution.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    import zipfile

    (wheel,) = tmp_path.glob("jax_unsampler-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"jax_unsampler", "torch_bridge"}, sorted(top)
    assert "jax_unsampler/__main__.py" in names


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_comfy_registry_metadata():
    config = _pyproject()
    project, comfy = config["project"], config["tool"]["comfy"]
    # The Registry's node id rules (docs.comfy.org/registry/specifications).
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?![-_.])){0,98}", project["name"])
    assert "comfyui" not in project["name"].lower()
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy["Icon"]
    assert icon.startswith("https://raw.githubusercontent.com/")
    assert (ROOT / icon.split("/main/", 1)[1]).is_file()  # the image is in the repository
    # The version is dynamic; comfy-cli reads [tool.comfy.version].path as text, expecting a line
    # `__version__ = "X.Y.Z"` (semantic version, double quotes).
    text = (ROOT / comfy["version"]["path"]).read_text()
    (version,) = re.findall(r'^__version__ = "(\d+\.\d+\.\d+)"$', text, re.M)
    assert version == ju.__version__ and "version" in project["dynamic"]


def test_requirements_txt_cannot_replace_comfyuis_torch_or_pin_numpy():
    requirements = pytest.importorskip("packaging.requirements")
    lines = [
        line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
    ]  # fmt: skip
    reqs = [requirements.Requirement(line) for line in lines if line]
    names = {r.name.lower() for r in reqs}
    assert not names & {"torch", "torchvision", "torchaudio", "comfyui", "comfy", "xformers"}
    for r in reqs:
        # Lower bounds only: an upper bound or a pin could make pip downgrade what ComfyUI has.
        assert all(spec.operator == ">=" for spec in r.specifier), r
    # The same runtime dependencies as the package itself, and what the nodes' plots need.
    project = _pyproject()["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["comfyui"]]
    ours = {requirements.Requirement(d).name.lower(): str(requirements.Requirement(d).specifier)
            for d in declared}  # fmt: skip
    assert {r.name.lower(): str(r.specifier) for r in reqs} == ours


def _our_node_types() -> dict:
    from torch_bridge import NODE_CLASS_MAPPINGS

    return {
        k: {"input": c.INPUT_TYPES(), "output": list(c.RETURN_TYPES)} for k, c in NODE_CLASS_MAPPINGS.items()
    }


def _problems_of_our_node(workflow: dict) -> list[str]:
    return [p for p in check_workflow(workflow, _our_node_types()) if "unknown node type" not in p]


def test_example_workflows_use_the_node_with_valid_inputs():
    pytest.importorskip("torch")
    workflows = example_workflows()
    assert len(workflows) >= 2
    for name, workflow in workflows.items():
        types = [node["type"] for node in workflow["nodes"]]
        assert set(NODES) & set(types), name
        assert _problems_of_our_node(workflow) == [], name
    preview = workflows["unsample_and_preview.json"]
    assert {"SaveLatent", "VAEDecode", "PreviewImage"} <= {n["type"] for n in preview["nodes"]}
    for name in ("unsample_then_resample.json", "invert_then_resample.json"):
        assert {"KSamplerAdvanced", "LatentFromBatch", "Note"} <= {
            n["type"] for n in workflows[name]["nodes"]
        }
    upscale = {n["type"] for n in workflows["upscale_with_iterative_mixing.json"]["nodes"]}
    assert {"LatentUpscaleBy", "JaxUnsampler_IterativeMixingKSampler", "SaveImage", "Note"} <= upscale


def test_the_inversion_workflow_samples_back_from_its_top_entry_at_cfg_1():
    nodes = {n["type"]: n for n in example_workflows()["invert_then_resample.json"]["nodes"]}
    node = "JaxUnsampler_InvertedBatchUnsampler"
    sampler_name, scheduler, steps, start, end, _, cfg, solver = nodes[node]["widgets_values"]
    add_noise, _, _, k_steps, k_cfg, k_sampler, k_scheduler, k_start, k_end, _ = nodes["KSamplerAdvanced"][
        "widgets_values"
    ]
    assert add_noise == "disable" and (k_steps, k_start) == (steps, start) and end >= steps and k_end >= steps
    assert (k_sampler, k_scheduler) == (sampler_name, scheduler) and solver in ("euler", "heun")
    assert cfg == k_cfg == 1.0
    assert nodes["LatentFromBatch"]["widgets_values"] == [steps - start - 1, 1]


def test_the_second_workflow_picks_the_entry_the_sampler_starts_from():
    # The batch is least noise first: with steps n from start_at_step s it has n - s entries, and
    # its last one is at KSampler's sigma of step s, where KSamplerAdvanced starts.
    nodes = {n["type"]: n for n in example_workflows()["unsample_then_resample.json"]["nodes"]}
    _, _, steps, start, end, *_ = nodes[NODE_ID]["widgets_values"]
    add_noise, _, _, k_steps, _, k_sampler, k_scheduler, k_start, k_end, _ = nodes["KSamplerAdvanced"][
        "widgets_values"
    ]
    index, length = nodes["LatentFromBatch"]["widgets_values"]
    assert add_noise == "disable" and (k_steps, k_start) == (steps, start) and end >= steps and k_end >= steps
    assert (k_sampler, k_scheduler) == tuple(nodes[NODE_ID]["widgets_values"][:2])
    assert (index, length) == (steps - start - 1, 1)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda v: v.__setitem__(2, 10001), "steps: 10001 is outside [0, 10000]"),
        (lambda v: v.__setitem__(0, "no_such_sampler"), "sampler_name: 'no_such_sampler' is not one of"),
        (lambda v: v.__setitem__(5, 0), "normalize: 0 is not a BOOLEAN"),
        (lambda v: v.pop(7), "10 widget values for 11 widgets"),
    ],
)
def test_the_workflow_check_can_fail(edit, problem):
    pytest.importorskip("torch")
    workflow = copy.deepcopy(example_workflows()["unsample_and_preview.json"])
    (node,) = [n for n in workflow["nodes"] if n["type"] == NODE_ID]
    edit(node["widgets_values"])
    assert any(problem in p for p in _problems_of_our_node(workflow)), _problems_of_our_node(workflow)
