"""Shared fixtures and helpers: the golden numbers ComfyUI itself computed (see data/README.md),
and ComfyUI itself where `COMFYUI_PATH` names a checkout."""

from __future__ import annotations

import collections
import functools
import gzip
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import pathlib
import sys
import types

import numpy as np
import pytest
from comfyui_stand_ins import StandIns, stand_in_if_broken  # noqa: F401  (re-exported for the tests)

DATA = pathlib.Path(__file__).parent / "data"

# The command and the ComfyUI node keep compiled programs in a persistent cache (the user's
# cache folder, ComfyUI's user directory). Tests run them in this process and in children:
# neither writes outside the test's own folders unless a test turns the cache on itself.
os.environ["JAX_UNSAMPLER_CACHE_DIR"] = "off"
os.environ["JAX_UNSAMPLER_NODE_CACHE"] = "off"

# torch is an extra (torch_bridge): without it the jax_unsampler tests still run, and the
# header says which modules were left out.
HAS_TORCH = importlib.util.find_spec("torch") is not None
if not HAS_TORCH:
    collect_ignore_glob = ["test_torch_bridge*.py", "test_comfyui_*.py"]


def pytest_report_header(config):
    if not HAS_TORCH:
        return "torch is not installed: the torch_bridge tests are not collected (pip install -e '.[torch]')"
    return None


# .ci/run runs the quick suite in two environments (without torch: the README's path; with it).
# JAX_UNSAMPLER_PASSED_LOG names a file the first run lists its passed tests in, and
# JAX_UNSAMPLER_SKIP_PASSED one the second run deselects them from: a test that passed without
# torch is not run again, so every test runs once and none is skipped in both.
_PASSED_LOG = os.environ.get("JAX_UNSAMPLER_PASSED_LOG")
_SKIP_PASSED = os.environ.get("JAX_UNSAMPLER_SKIP_PASSED")


def pytest_runtest_logreport(report):
    if _PASSED_LOG and report.when == "call" and report.passed:
        with open(_PASSED_LOG, "a") as f:
            f.write(report.nodeid + "\n")


def pytest_collection_modifyitems(config, items):
    if not _SKIP_PASSED:
        return
    passed = set(pathlib.Path(_SKIP_PASSED).read_text().split("\n"))
    keep = [item for item in items if item.nodeid not in passed]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid in passed])
    items[:] = keep


def quick_subset(values, every: int, ids=None, *, unpack: bool = False) -> list:
    """Parameters for `parametrize` with one value in `every` in the quick suite and the others
    marked `slow`: every kind of case is exercised by `pytest`, all of them by `pytest -m slow`
    (and so by .ci/run). `ids`, if given, is a list of test ids, one per value; `unpack` for
    tuples that fill several argument names."""
    params = []
    for i, value in enumerate(values):
        marks = () if i % every == 0 else (pytest.mark.slow,)
        args = value if unpack else (value,)
        params.append(pytest.param(*args, marks=marks, id=None if ids is None else ids[i]))
    return params


def run_node(cls, *args, **kwargs):
    """Run a V1 node class as ComfyUI does, every input by name: positional `args` are named in
    INPUT_TYPES order (required, then optional). Returns the node's output tuple."""
    spec = cls.INPUT_TYPES()
    names = [*spec["required"], *spec.get("optional", {})]
    return getattr(cls(), cls.FUNCTION)(**dict(zip(names, args, strict=False)), **kwargs)


@functools.lru_cache(maxsize=1)
def golden_sigmas() -> dict:
    with gzip.open(DATA / "sigmas.json.gz", "rt") as f:
        return json.load(f)


def golden_npz(name: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    """`(index records, arrays)` of `node_outputs.npz` or `model_mode.npz`."""
    with np.load(DATA / name) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(str(arrays.pop("index"))), arrays


def grouped(records, *keys) -> dict[tuple, list[dict]]:
    """Records grouped by the values of `keys`, in first-seen order."""
    groups = collections.defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in keys)].append(r)
    return dict(groups)


def assert_sigmas_close(got, expected, sigma_max, context=""):
    """The golden bar: same length, each sigma within 1e-5 relative plus 1e-6 of sigma_max."""
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    assert got.shape == expected.shape, f"{context}: length {got.shape} != golden {expected.shape}"
    bound = 1e-5 * np.abs(expected) + 1e-6 * sigma_max
    bad = ~(np.abs(got - expected) <= bound)
    assert not bad.any(), (
        f"{context}: {bad.sum()} sigmas off, first at {np.argmax(bad)}: "
        f"{got[bad][:3]} vs golden {expected[bad][:3]}"
    )


# ComfyUI, where COMFYUI_PATH names a checkout (the tests that need it are skipped otherwise).
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")

# The reference trees beside the checkout (`../shared/reference/`, as CI lays them out); the
# environment variables override where each one is.
REFERENCE = pathlib.Path(
    os.environ.get(
        "JAX_UNSAMPLER_REFERENCE", pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference"
    )
)
ITERATIVE_MIXER_PATH = pathlib.Path(
    os.environ.get("ITERATIVE_MIXER_PATH")
    or os.environ.get("ITERATIVE_MIXER_MIRROR")  # the older name, for a git directory
    or REFERENCE / "ComfyUI-Iterative-Mixer"
)
"""The original ComfyUI-Iterative-Mixer's source tree (or a git directory of it)."""
needs_comfyui = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to run")


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's modules that model sampling needs, imported from COMFYUI_PATH on the CPU."""
    return import_comfy(COMFYUI_PATH)


@pytest.fixture(scope="session")
def server(comfy, tmp_path_factory):
    """A ComfyUI server with this repository as a node pack, the test-only nodes, a tiny SD1.5
    checkpoint and a picture (tests/comfyui_server.py), for the tests of a session (worker)."""
    from comfyui_server import comfyui_server

    with comfyui_server(tmp_path_factory.mktemp("comfyui-base"), COMFYUI_PATH) as running:
        yield running


def import_comfy(comfyui_path: str) -> types.SimpleNamespace:
    """ComfyUI's modules that model sampling needs, imported from a checkout on the CPU (the
    `comfy` fixture; also for scripts the tests run in a subprocess)."""
    root = str(pathlib.Path(comfyui_path).expanduser().resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    stand_in_if_broken("torchvision")
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management looks for a GPU
    import comfy.latent_formats
    import comfy.model_management
    import comfy.model_patcher
    import comfy.model_sampling
    import comfy.samplers

    return types.SimpleNamespace(
        latent_formats=comfy.latent_formats,
        model_patcher=comfy.model_patcher,
        model_sampling=comfy.model_sampling,
        samplers=comfy.samplers,
        model_management=comfy.model_management,
    )


# Families for ComfyUI patchers: (sampling class, prediction mixin, settings, latent format class).
COMFY_FAMILIES = {
    "sd15": ("ModelSamplingDiscrete", "EPS", {}, "SD15"),
    "sd3": ("ModelSamplingDiscreteFlow", "CONST", {"shift": 3.0}, "SD3"),
    "wan21": ("ModelSamplingDiscreteFlow", "CONST", {"shift": 8.0}, "Wan21"),
    "flux-dev": ("ModelSamplingFlux", "CONST", {}, "Flux"),
    "stable-cascade-c": ("StableCascadeSampling", "EPS", {"shift": 2.0}, "SC_Prior"),
    "sdxl": ("ModelSamplingDiscrete", "EPS", {}, "SDXL"),
}


def comfy_sampling(comfy, sampling_class: str, mixin: str, settings: dict):
    """A model sampling object composed as ComfyUI's model_base composes one."""
    bases = (getattr(comfy.model_sampling, sampling_class), getattr(comfy.model_sampling, mixin))
    config = types.SimpleNamespace(sampling_settings=settings)
    return type("ModelSampling", bases, {})(config)


def comfy_patcher(comfy, family: str, old_style: bool = False):
    """A ComfyUI ModelPatcher (or, `old_style`, a pre-`get_model_object` one) around a tiny torch
    module carrying a family's model sampling and latent format: no weights, no GPU."""
    import torch

    sampling_class, mixin, settings, latent_format = COMFY_FAMILIES[family]
    tiny = torch.nn.Module()
    tiny.model_sampling = comfy_sampling(comfy, sampling_class, mixin, settings)
    tiny.latent_format = getattr(comfy.latent_formats, latent_format)()
    tiny.proj = torch.nn.Linear(2, 2)
    if old_style:
        return types.SimpleNamespace(model=tiny)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(tiny, load_device=cpu, offload_device=cpu)
