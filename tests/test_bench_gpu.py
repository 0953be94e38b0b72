"""benchmarks/bench_gpu.py runs on a machine without a GPU: CPU lines, GPU lines skipped, and
the CPU half of the bit comparison (the pinned hashes) passing. On a CUDA machine the same
command prints the GPU lines and compares CPU and GPU bits."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU mode; on a GPU run the script itself")
def test_bench_gpu_runs_in_cpu_mode():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--quick", "--repeats", "1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("CPU  jax_unsampler noised_latents") and "Melem/s" in line for line in lines)
    assert sum(line.startswith("GPU  ") and "skipped (no CUDA device" in line for line in lines) == 3
    assert "CPU hashes checked against the pinned ones" in done.stdout
    assert "differs from the pinned" not in done.stdout
