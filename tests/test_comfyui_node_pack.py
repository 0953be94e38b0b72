"""The repository as a node pack inside a real ComfyUI: set COMFYUI_PATH to a checkout to run
these (skipped otherwise).

- A copy of the repository made by `git archive HEAD` (what a clone, ComfyUI-Manager or
  `comfy node install` puts into `custom_nodes/`) is loaded by ComfyUI's own loader
  (`nodes.load_custom_node`) in a fresh interpreter and computes a batch.
- pyproject.toml parses with ComfyUI's `comfy_config.config_parser`.
- The example workflows validate against the `INPUT_TYPES` of every node they use.
- A real server: ComfyUI's `main.py --cpu` on a free 127.0.0.1 port, with a scratch
  `custom_nodes/` holding the copy and a test-only node that returns a MODEL without weights
  (tests/comfyui_tiny_model_node.py). Workflows go to `/prompt`, results come from `/history`.
  The server is started and stopped by the module's fixture, every wait bounded.

ComfyUI's start-up needs torchvision, torchaudio, kornia and spandrel; where they do not load
beside the installed torch, stand-ins take their place (tests/comfyui_main.py).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from comfyui_server import COMFYUI_PYTHON, PACK_NAME, environment, git_archive_pack, request, run_prompt
from conftest import COMFYUI_PATH, comfy_patcher, needs_comfyui
from ui_workflows import check_workflow, example_workflows

pytestmark = needs_comfyui

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
NODE_ID = "JaxUnsampler_BatchUnsampler"
INVERSION_NODE_ID = "JaxUnsampler_InvertedBatchUnsampler"
DISPLAY_NAMES = {  # every V1 node of the pack
    NODE_ID: "Batch Unsampler (jax-unsampler)",
    INVERSION_NODE_ID: "Inverted Batch Unsampler (jax-unsampler)",
    "JaxUnsampler_LatentBatchStatistics": "Latent Batch Statistics (jax-unsampler)",
    "JaxUnsampler_IterativeMixingKSampler": "Iterative Mixing KSampler (jax-unsampler)",
    "JaxUnsampler_IterativeMixingKSamplerAdvanced": "Iterative Mixing KSampler Advanced (jax-unsampler)",
    "JaxUnsampler_IterativeMixingSampler": "Iterative Mixing Sampler (jax-unsampler)",
}
SD15_SCALE = 0.18215  # SD1.5's latent scale factor, the node's divisor in node mode


def load_with_comfyui(pack: pathlib.Path, tmp: pathlib.Path, node_types=(), **env: str) -> tuple[dict, dict]:
    """Runs tests/comfyui_load_node_pack.py: (its report, the arrays it saved)."""
    out = tmp / "probe.npz"
    done = subprocess.run(
        [sys.executable, str(TESTS / "comfyui_load_node_pack.py"), COMFYUI_PATH, str(pack), str(out),
         *node_types],
        capture_output=True, text=True, timeout=600, cwd=tmp, env=environment(**env),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    arrays = dict(np.load(out)) if out.exists() else {}
    return json.loads(line.removeprefix("REPORT ")), arrays


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The git-archive copy loaded by ComfyUI's loader, with the example workflows' node types."""
    tmp = tmp_path_factory.mktemp("loader")
    pack = git_archive_pack(tmp / "custom_nodes")
    node_types = sorted({n["type"] for w in example_workflows().values() for n in w["nodes"]})
    report, arrays = load_with_comfyui(pack, tmp, node_types)
    return types.SimpleNamespace(pack=pack, report=report, arrays=arrays)


def test_a_git_archive_in_custom_nodes_loads_and_computes(loaded):
    report, pack = loaded.report, loaded.pack
    assert report["loaded"] is True
    assert sorted(report["added"]) == sorted(DISPLAY_NAMES)
    assert report["display_names"] == DISPLAY_NAMES
    # The copy's packages, not the worktree's or an installed one.
    assert report["files"] == {
        name: str(pack / name / "__init__.py") for name in ("jax_unsampler", "torch_bridge")
    }  # fmt: skip
    assert report["jax_after_load"] is False and report["jax_after_run"] is True
    # The original node's formula with its torch noise: x repeated step-major plus
    # sigma_i / scale * randn((steps * B, ...)) from a generator seeded with the seed, where
    # sigma_i are ComfyUI's own KSampler sigmas, least noise first.
    x, z, full = loaded.arrays["x"], loaded.arrays["z"], loaded.arrays["ksampler_sigmas"]
    sigmas = (full[:6] / np.float32(SD15_SCALE))[::-1]
    eps = torch.randn((6 * 2, 4, 3, 3), generator=torch.Generator().manual_seed(11)).numpy()
    want = np.tile(x, (6, 1, 1, 1)) + sigmas.repeat(2)[:, None, None, None] * eps
    assert z.shape == (12, 4, 3, 3)
    np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()))


def test_the_example_workflows_validate_against_comfyuis_nodes(loaded):
    node_types = loaded.report["input_types"]
    missing = sorted(k for k, v in node_types.items() if v is None and k not in ("Note", "MarkdownNote"))
    assert missing == []
    node_types = {k: v for k, v in node_types.items() if v is not None}
    for name, workflow in example_workflows().items():
        # A checkpoint or an image is the user's file; every other value must be one ComfyUI accepts.
        files = {("CheckpointLoaderSimple", "ckpt_name"), ("LoadImage", "image")}
        problems = check_workflow(workflow, node_types, file_inputs=files)
        assert problems == [], name


def test_the_v3_node_through_the_loader(tmp_path):
    pack = git_archive_pack(tmp_path / "custom_nodes")
    report, _ = load_with_comfyui(pack, tmp_path, JAX_UNSAMPLER_NODE_API="v3")
    assert report["loaded"] is True and sorted(report["added"]) == sorted(f"{k}V3" for k in DISPLAY_NAMES)


def test_pyproject_parses_with_comfyuis_config_parser(comfy):
    pytest.importorskip("pydantic_settings")
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(ROOT))
    assert config.project.name == "jax-unsampler"
    assert config.project.urls.repository.startswith("https://github.com/")
    assert config.tool_comfy.publisher_id and config.tool_comfy.display_name
    assert config.tool_comfy.icon.startswith("https://")
    assert config.tool_comfy.web is None  # no web folder to register


# The server (the `server` fixture of conftest.py: tests/comfyui_server.py).


def _workflow(seed: int, end_at_step: int = 10000, broken: bool = False, start_at_step: int = 0) -> dict:
    """Tiny SD1.5 MODEL -> the node on an EmptyLatentImage of batch 2 -> SaveLatent."""
    return {
        "1": {"class_type": "TinyModelForTests", "inputs": {"broken": broken}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "3": {
            "class_type": NODE_ID,
            "inputs": {
                "model": ["1", 0],
                "latent_image": ["2", 0],
                "sampler_name": "euler",
                "scheduler": "karras",
                "steps": 5,
                "start_at_step": start_at_step,
                "end_at_step": end_at_step,
                "normalize": False,
                "seed": seed,
                "noise_source": "torch",
                "mode": "node",
                "coupling": "independent",
            },
        },
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": f"jaxu/{seed}"}},
    }


def _load_latent(path: pathlib.Path) -> np.ndarray:
    """A .latent file as ComfyUI's LoadLatent reads it."""
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    multiplier = 1.0 if "latent_format_version_0" in tensors else 1.0 / SD15_SCALE
    return tensors["latent_tensor"].astype(np.float32) * np.float32(multiplier)


def test_server_lists_the_example_workflows_as_templates(server):
    status, templates = request(server.url + "/workflow_templates")
    assert status == 200
    assert sorted(templates[PACK_NAME]) == sorted(name.removesuffix(".json") for name in example_workflows())
    status, served = request(f"{server.url}/api/workflow_templates/{PACK_NAME}/unsample_and_preview.json")
    assert status == 200 and served == example_workflows()["unsample_and_preview.json"]
    status, info = request(f"{server.url}/object_info/{NODE_ID}")
    assert status == 200 and info[NODE_ID]["python_module"] == f"custom_nodes.{PACK_NAME}"


def test_server_runs_the_node_and_saves_the_batch(server, comfy):
    entry = run_prompt(server, _workflow(seed=7))
    assert entry["status"]["status_str"] == "success", entry["status"]
    (saved,) = entry["outputs"]["4"]["latents"]
    latent = _load_latent(server.base / "output" / saved["subfolder"] / saved["filename"])
    assert latent.shape == (5 * 2, 4, 8, 8) and latent.dtype == np.float32
    # EmptyLatentImage is zeros, so each entry is sigma_i / scale times the original's torch
    # noise, sigma_i from ComfyUI's own KSampler for an SD1.5 model sampling, least noise first.
    patcher = comfy_patcher(comfy, "sd15")
    ks = comfy.samplers.KSampler(patcher, 5, "cpu", sampler="euler", scheduler="karras", denoise=1.0)
    sigmas = (ks.sigmas[:5].float().numpy() / np.float32(SD15_SCALE))[::-1]
    eps = torch.randn((10, 4, 8, 8), generator=torch.Generator().manual_seed(7)).numpy()
    want = sigmas.repeat(2)[:, None, None, None] * eps
    np.testing.assert_allclose(latent, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()))


def test_server_reports_bad_input_and_keeps_serving(server):
    # Outside the node's range: ComfyUI's validation answers /prompt with the node's error.
    status, answer = request(server.url + "/prompt", {"prompt": _workflow(seed=1, end_at_step=0)})
    assert status == 400 and answer["node_errors"]["3"]["class_type"] == NODE_ID
    assert any("end_at_step" in str(e) for e in answer["node_errors"]["3"]["errors"])
    # end_at_step below start_at_step (each in range, so ComfyUI lets it through): the node
    # refuses the empty window, and its one-line error naming both inputs is in /history.
    entry = run_prompt(server, _workflow(seed=4, start_at_step=3, end_at_step=2))
    assert entry["status"]["status_str"] == "error"
    ((_, error),) = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_type"] == NODE_ID and error["exception_type"].endswith("ValueError")
    message = error["exception_message"].rstrip("\n")
    assert "\n" not in message and message.startswith("JaxUnsampler_BatchUnsampler: ")
    assert "start_at_step" in message and "end_at_step" in message
    # A MODEL the node cannot read: the run fails with the node's one-line error in /history.
    entry = run_prompt(server, _workflow(seed=2, broken=True))
    assert entry["status"]["status_str"] == "error"
    ((_, error),) = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_type"] == NODE_ID and error["exception_type"].endswith("ValueError")
    # ComfyUI sends "{exception}\n{tips}" (no tips for a ValueError): the message is one line.
    message = error["exception_message"].rstrip("\n")
    assert "\n" not in message
    assert message.startswith(
        "JaxUnsampler_BatchUnsampler: model: cannot find a model_sampling"
    )  # the input, not a function
    assert "expected a ComfyUI MODEL" in message
    # And the server still runs good workflows.
    assert run_prompt(server, _workflow(seed=3))["status"]["status_str"] == "success"


# Every node of the pack, and every template, on the server's tiny SD1.5 checkpoint.


def _object_info(server) -> dict:
    status, info = request(server.url + "/object_info", timeout=60)
    assert status == 200
    return info


def _saved_latent(server, entry: dict, node: str) -> np.ndarray:
    (saved,) = entry["outputs"][node]["latents"]
    return _load_latent(server.base / "output" / saved["subfolder"] / saved["filename"])


ENVIRONMENT_PROBE = """
import importlib.metadata as md, importlib.util, json, sys
from packaging.requirements import Requirement
lines = [l.split("#")[0].strip() for l in open(sys.argv[1]).read().splitlines()]
unmet = []
for r in map(Requirement, filter(None, lines)):
    try:
        if not r.specifier.contains(md.version(r.name), prereleases=True):
            unmet.append(str(r))
    except md.PackageNotFoundError:
        unmet.append(str(r))
extra = [m for m in ("pytest", "chex", "jax_unsampler", "torch_bridge") if importlib.util.find_spec(m)]
print(json.dumps(dict(unmet=unmet, extra=extra)))
"""


@pytest.mark.skipif(
    COMFYUI_PYTHON == sys.executable, reason="set COMFYUI_PYTHON to ComfyUI's environment (.ci/run makes one)"
)
def test_the_server_runs_in_comfyuis_environment_as_the_docs_install_it():
    """The server tests below run in ComfyUI's environment with the pack's requirements.txt and
    nothing else (no test or viz extra, the pack not pip-installed: it runs from custom_nodes/),
    so that a node needing what requirements.txt lacks fails here as it fails for users."""
    done = subprocess.run(
        [COMFYUI_PYTHON, "-c", ENVIRONMENT_PROBE, str(ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=120, cwd=ROOT.parent, env=environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == dict(unmet=[], extra=[])


@pytest.mark.parametrize("name", sorted(example_workflows()))
def test_server_runs_every_template_unchanged(server, name):
    """Each template as the editor queues it (widget values named by the server's object_info),
    on the tiny checkpoint saved under the templates' checkpoint name and their picture."""
    from ui_workflows import to_api_prompt

    workflow = example_workflows()[name]
    entry = run_prompt(server, to_api_prompt(workflow, _object_info(server)))
    assert entry["status"]["status_str"] == "success", (name, entry["status"])
    assert entry["outputs"], name  # it saved or previewed something
    if name == "upscale_with_iterative_mixing.json":
        from PIL import Image

        ((_, out),) = entry["outputs"].items()
        (image,) = out["images"]
        with Image.open(server.base / "output" / image["subfolder"] / image["filename"]) as saved:
            assert saved.size == (128, 128)  # the 64x64 picture upscaled 2x and refined


def _mixing_base(seed: int = 0) -> dict:
    """Tiny checkpoint, conditioning without a text encoder, a 64x64 (8x8 latent) batch of one."""
    return {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
        },
        "2": {"class_type": "TinyConditioningForTests", "inputs": {"seed": 1}},
        "3": {"class_type": "TinyConditioningForTests", "inputs": {"seed": 2}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {
            "class_type": NODE_ID,
            "inputs": {
                "model": ["1", 0],
                "latent_image": ["4", 0],
                "sampler_name": "euler",
                "scheduler": "karras",
                "steps": 4,
                "start_at_step": 0,
                "end_at_step": 10000,
                "normalize": False,
                "seed": seed,
            },
        },  # fmt: skip
    }


def test_server_runs_the_statistics_node(server):
    prompt = _mixing_base()
    prompt["6"] = {
        "class_type": "JaxUnsampler_LatentBatchStatistics",
        "inputs": {
            "latent_batch": ["5", 0], "model": ["1", 0], "latent_image": ["4", 0], "sampler_name": "euler",
            "scheduler": "karras", "steps": 4, "start_at_step": 0, "end_at_step": 10000, "normalize": False,
        },
    }  # fmt: skip
    prompt["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    entry = run_prompt(server, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["7"]["images"]) == 1


def test_server_runs_the_advanced_mixing_node(server):
    prompt = _mixing_base()
    prompt["6"] = {
        "class_type": "JaxUnsampler_IterativeMixingKSamplerAdvanced",
        "inputs": {
            "model": ["1", 0], "seed": 3, "cfg": 4.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image_batch": ["5", 0], "denoise": 1.0,
            "alpha_1": 2.4, "reverse_input_batch": True, "blending_schedule": "cosine",
            "stop_blending_at_pct": 1.0, "clamp_blending_at_pct": 1.0, "blending_function": "slerp",
        },
    }  # fmt: skip
    prompt["7"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "jaxu/adv"}}
    prompt["8"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 3]}}
    entry = run_prompt(server, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    mixed = _saved_latent(server, entry, "7")
    assert mixed.shape == (5, 4, 8, 8) and np.isfinite(mixed).all()
    assert len(entry["outputs"]["8"]["images"]) == 1  # the schedule plot


def test_server_runs_the_mixing_sampler_in_samplercustom(server):
    prompt = _mixing_base()
    prompt["6"] = {
        "class_type": "JaxUnsampler_IterativeMixingSampler",
        "inputs": {
            "sampler": "euler", "alpha_1": 2.4, "blending_schedule": "cosine",
            "blending_function": "addition", "normalize_on_mean": False, "start_blending_at_pct": 0.0,
            "stop_blending_at_pct": 1.0,
            "clamp_blending_at_pct": 1.0, "blend_min": 0.0, "blend_max": 1.0, "rewind": True,
            "rewind_min": 0.3, "rewind_max": 0.8,
        },
    }  # fmt: skip
    prompt["7"] = {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "karras",
                                                              "steps": 6, "denoise": 1.0}}  # fmt: skip
    prompt["8"] = {
        "class_type": "SamplerCustom",
        "inputs": {
            "model": ["1", 0], "add_noise": False, "noise_seed": 5, "cfg": 3.0, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["6", 0], "sigmas": ["7", 0], "latent_image": ["4", 0],
        },
    }  # fmt: skip
    prompt["9"] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": ["8", 0], "filename_prefix": "jaxu/sampler"},
    }
    entry = run_prompt(server, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    out = _saved_latent(server, entry, "9")
    assert out.shape == (1, 4, 8, 8) and np.isfinite(out).all()


def test_server_runs_the_one_node_mixing_ksampler_and_refuses_a_bad_choice(server):
    prompt = _mixing_base()
    prompt["6"] = {
        "class_type": "JaxUnsampler_IterativeMixingKSampler",
        "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 0, "steps": 3, "cfg": 2.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0,
            "alpha_1": 2.4, "blending_schedule": "cosine", "blending_function": "addition",
            "normalize_on_mean": False, "noise_source": "torch",
        },
    }  # fmt: skip
    prompt["7"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "jaxu/one"}}
    entry = run_prompt(server, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert _saved_latent(server, entry, "7").shape == (1, 4, 8, 8)
    # A choice the node does not offer (an old or edited workflow): refused by ComfyUI's check.
    prompt["6"]["inputs"]["noise_source"] = "numpy"
    status, answer = request(server.url + "/prompt", {"prompt": prompt})
    assert (
        status == 400 and answer["node_errors"]["6"]["class_type"] == "JaxUnsampler_IterativeMixingKSampler"
    )
