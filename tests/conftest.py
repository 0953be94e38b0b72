"""Shared fixtures: the golden numbers ComfyUI itself computed (see data/README.md)."""

from __future__ import annotations

import collections
import functools
import gzip
import importlib.util
import json
import pathlib

import numpy as np

DATA = pathlib.Path(__file__).parent / "data"

# torch is an extra (torch_bridge): without it the jax_unsampler tests still run, and the
# header says which modules were left out.
HAS_TORCH = importlib.util.find_spec("torch") is not None
if not HAS_TORCH:
    collect_ignore_glob = ["test_torch_bridge*.py", "test_comfyui_parity.py"]


def pytest_report_header(config):
    if not HAS_TORCH:
        return "torch is not installed: the torch_bridge tests are not collected (pip install -e '.[torch]')"
    return None


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
