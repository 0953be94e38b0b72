"""Parity with the original node: the golden outputs recorded from ComfyUI and torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_bridge_doubles as doubles
from conftest import golden_npz, run_node

import torch_bridge as tb

NODE_CASES, NODE_DATA = golden_npz("node_outputs.npz")
MODEL_CASES, MODEL_DATA = golden_npz("model_mode.npz")


def _scaled_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want))))


def _run(case, x, **options):
    (out,) = run_node(
        tb.NODE_CLASS_MAPPINGS[tb.NODE_ID],
        doubles.patcher(case["family"]), case["sampler"], case["scheduler"], case["steps"],
        case.get("start_at_step", 0), case.get("end_at_step", 10000), {"samples": torch.from_numpy(x)},
        normalize=case.get("normalize", False), seed=case["seed"], noise_source="torch", **options,
    )  # fmt: skip
    return out["samples"]


@pytest.mark.parametrize("i", [i for i, c in enumerate(NODE_CASES) if "error" not in c])
def test_node_reproduces_the_original_output(i):
    case = NODE_CASES[i]
    z = _run(case, NODE_DATA[f"x{i}"])
    assert z.dtype == torch.float32
    assert _scaled_error(z.numpy(), NODE_DATA[f"z{i}"]) <= 1e-6


def test_the_5d_case_the_original_could_not_run_gives_the_same_math():
    (i,) = [i for i, c in enumerate(NODE_CASES) if "error" in c]
    case = NODE_CASES[i]
    x, sigmas = NODE_DATA[f"x{i}"], NODE_DATA[f"sigmas{i}"]
    assert x.ndim == 5
    z = _run(case, x).numpy()
    # The original's formula on the original's noise, in NumPy: z[i*B+b] = x[b] + s[i]*eps[i*B+b].
    n, b = len(sigmas), x.shape[0]
    generator = torch.Generator().manual_seed(case["seed"])
    eps = torch.randn((n * b, *x.shape[1:]), generator=generator).numpy().reshape(n, b, *x.shape[1:])
    want = (x[None] + sigmas.reshape(-1, *[1] * x.ndim) * eps).reshape(n * b, *x.shape[1:])
    assert _scaled_error(z, want) <= 1e-6


@pytest.mark.parametrize("i", range(len(MODEL_CASES)))
def test_model_mode_reproduces_what_comfyui_feeds_the_model(i):
    case = MODEL_CASES[i]
    z = _run(case, MODEL_DATA[f"x{i}"], mode="model")
    assert _scaled_error(z.numpy(), MODEL_DATA[f"z{i}"]) <= 1e-6
