"""Package hygiene: the public surface, no torch in the core, typed."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import jax_unsampler as ju


def test_core_never_imports_torch():
    code = "import sys, jax_unsampler as ju; ju.preset('sd15').model_sampling; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_init_only_reexports():
    source = pathlib.Path(ju.__file__).read_text()
    body = [
        line
        for line in source.splitlines()
        if line.strip() and not line.startswith(("from ", "#", '"""', "__version__")) and "  " not in line[:2]
    ]
    assert all(not line.startswith(("def ", "class ")) for line in body)
    for name in (
        "SCHEDULERS", "SAMPLERS", "DISCARD_PENULTIMATE_SAMPLERS", "model_sampling", "preset", "presets",
        "calculate_sigmas", "ksampler_sigmas", "unsampler_sigmas", "noised_latents", "batch_unsample",
    ):  # fmt: skip
        assert hasattr(ju, name), name


def test_py_typed_marker_is_shipped():
    assert (pathlib.Path(ju.__file__).parent / "py.typed").exists()


def test_presets_include_the_golden_families():
    from conftest import golden_sigmas

    assert set(golden_sigmas()["families"]) <= set(ju.presets())
    for name in ju.presets():
        p = ju.preset(name)
        assert p.latent_rank == p.latent_dimensions + 2
        assert p.model_sampling.sigmas.shape[0] >= 1000
