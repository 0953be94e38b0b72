"""`jax-unsampler unsample` spreads the steps over one XLA CPU device per core: the same bytes.

The device count is fixed when JAX starts, so each count runs in its own interpreter, which
runs the command (`main`) on the pinned cases of test_noise_pinned.py, whole and streamed in
chunks, and prints the SHA-256 of each written batch: they must equal the pinned hashes.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_noise_pinned import PINNED_UNSAMPLE, UNSAMPLE, _latent

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys, pathlib
    from safetensors import safe_open
    from jax_unsampler.app._cli import main  # JAX is imported, not started: the command sets the devices
    from test_noise_pinned import UNSAMPLE, _digest
    devices, couplings, chunks = int(sys.argv[1]), sys.argv[2].split(","), json.loads(sys.argv[3])
    tmp = sys.argv[4]
    out = {}
    for model, sampler, scheduler, steps, start, end, mode, shape, dtype in UNSAMPLE:
        if dtype == "bfloat16":  # .npy has no bfloat16
            continue
        src = pathlib.Path(tmp, model + ".npy")
        for coupling in couplings:
            for chunk in chunks:
                dst = pathlib.Path(tmp, "out.latent")
                argv = ["unsample", str(src), "--out", str(dst), "--model", model, "--sampler", sampler,
                        "--scheduler", scheduler, "--steps", str(steps), "--start", str(start),
                        "--end", str(end), "--mode", mode, "--coupling", coupling, "--seed", "31",
                        "--normalize", "--devices", str(devices)]
                if chunk:
                    argv += ["--chunk-steps", str(chunk)]
                assert main(argv) == 0
                with safe_open(str(dst), framework="numpy") as f:
                    z = f.get_tensor("latent_tensor")
                out[f"{model} {coupling} {chunk}"] = _digest([z.astype(dtype)])
    import jax
    print(json.dumps(dict(devices=len(jax.devices()), digests=out)))
    """
)


def _run(tmp: pathlib.Path, devices: int, couplings: tuple[str, ...], chunks: tuple[int | None, ...]) -> dict:
    for model, *_, shape, dtype in UNSAMPLE:
        if dtype != "bfloat16":
            np.save(tmp / f"{model}.npy", np.asarray(_latent(shape, dtype)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    args = [sys.executable, "-c", SCRIPT, str(devices), ",".join(couplings), json.dumps(chunks), str(tmp)]
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(tmp, devices: int, couplings: tuple[str, ...], chunks: tuple[int | None, ...]) -> None:
    got = _run(tmp, devices, couplings, chunks)
    assert got["devices"] == devices
    cases = [c[0] for c in UNSAMPLE if c[-1] != "bfloat16"]
    expected = {f"{m} {c} {k}": PINNED_UNSAMPLE[(m, c)] for m in cases for c in couplings for k in chunks}
    assert got["digests"] == expected


@pytest.mark.parametrize("devices", [1, 3])
def test_the_command_writes_the_pinned_bytes_on_any_device_count(tmp_path, devices):
    # Streamed in chunks of 3 steps (4 and 5 chunks), and in one piece.
    _check(tmp_path, devices, ("independent",), (None, 3))


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2, 3])
def test_every_coupling_and_chunking_through_the_command(tmp_path, devices):
    _check(tmp_path, devices, ("independent", "shared", "markov"), (None, 1, 2, 5))
