"""The key -> batch mapping is a promise: pinned SHA-256 hashes of the output bytes.

Users who saved a seed must get the same batch from every later version, for every coupling,
chunking, dtype and rank. The hashes below were computed from the code at commit a165a20,
before the noise kernel was reworked for speed (issue 11); any change to the generation, the
order of the steps or items, or the rounding of the arithmetic changes a hash and fails here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_subset

import jax_unsampler as ju


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def _latent(shape, dtype):
    return jax.random.normal(jax.random.key(11), shape).astype(dtype)


def _sigmas(n):
    return ju.unsampler_sigmas(ju.preset("sd15").model_sampling, "euler", "karras", n)


# (name, key seed, latent shape, dtype, steps, options)
CASES = [
    ("b1-4d-f32", 0, (1, 4, 8, 8), "float32", 7, {}),
    ("b3-4d-f32", 5, (3, 4, 6, 10), "float32", 6, {}),
    ("b2-5d-f32", 9, (2, 16, 3, 4, 5), "float32", 4, {}),
    ("b2-4d-f16", 1, (2, 4, 8, 8), "float16", 5, {}),
    ("b2-4d-bf16", 2, (2, 4, 8, 8), "bfloat16", 5, {}),
    ("b1-3d-f32", 3, (1, 8, 33), "float32", 9, {}),
    ("one-step", 4, (2, 4, 4, 4), "float32", 1, {}),
    ("batch-index", 6, (3, 4, 4, 4), "float32", 5, {"batch_index": [7, 0, 2]}),
    ("step-offset", 7, (2, 4, 4, 4), "float32", 5, {"step_offset": 13}),
    ("const", 8, (2, 4, 4, 4), "float32", 5, {"noise_scaling": "const"}),
]
COUPLINGS = ("independent", "shared", "markov")

# Computed at commit a165a20 by the code as it was (see the module docstring).
PINNED_FULL = {
    ("b1-4d-f32", "independent", False): "a6e1aa03e5549d5b22087e65ffd65413",
    ("b1-4d-f32", "independent", True): "c4e9c674d2803de7ebb67ead6a394d73",
    ("b1-4d-f32", "shared", False): "1259a2c727f8965a18b33058aec3b633",
    ("b1-4d-f32", "shared", True): "f73ba75f581fc32c7dcee06c01725c9d",
    ("b1-4d-f32", "markov", False): "6ceadd95164bcb913e8bb13d661a6d5e",
    ("b1-4d-f32", "markov", True): "e5d80977f88193805045e8fc22b12e50",
    ("b3-4d-f32", "independent", False): "a43aad6e604362ac3bdd0afae5424b2e",
    ("b3-4d-f32", "shared", False): "a9354adef3db7784ae0e3937f7ca1cd4",
    ("b3-4d-f32", "markov", False): "9f1ddaa5dee21f1e2110355a85190759",
    ("b2-5d-f32", "independent", False): "e0d35cf2def2080638fbe4606ca67f20",
    ("b2-5d-f32", "independent", True): "6e59369e250d747774e6a05a557cbaef",
    ("b2-5d-f32", "shared", False): "d92ae6712e19e5271f5e94517d3485b1",
    ("b2-5d-f32", "shared", True): "9cd8fccaa9f0e9988aab0512ae3468a8",
    ("b2-5d-f32", "markov", False): "4d98a1c42af141c5bf4dd975587c287f",
    ("b2-5d-f32", "markov", True): "8aedbf98efb18b6943da35b1a220b4c1",
    ("b2-4d-f16", "independent", False): "fc482ba536986b435e3bb8fd598d4393",
    ("b2-4d-f16", "independent", True): "5c37b471058565892f7c61050280f43d",
    ("b2-4d-f16", "shared", False): "4ec7c40e301312ab593e23283c452234",
    ("b2-4d-f16", "shared", True): "c5c9ec2714514da80ed698bf31d2aab4",
    ("b2-4d-f16", "markov", False): "81154a230bc787feb8a2dfb958e208e1",
    ("b2-4d-f16", "markov", True): "eeeb50f09c687b81399b91fa4de3bb38",
    ("b2-4d-bf16", "independent", False): "3f48d6508f3ea30e96e30b4064d1baaa",
    ("b2-4d-bf16", "shared", False): "0aa48c1414880d1f233c4ac3e7cfa916",
    ("b2-4d-bf16", "markov", False): "e0b9d6180792a53a6bb21107360bd3d6",
    ("b1-3d-f32", "independent", False): "952042faf46392e5e3fa1fc8bf3fa2ae",
    ("b1-3d-f32", "shared", False): "425b144ef9a6b2d6d8c230b2237fc5c3",
    ("b1-3d-f32", "markov", False): "a05e7dcf6ff2f1103b95bff5f887f7c8",
    ("one-step", "independent", False): "bdbb9d62fc491f220a87905176b1bab6",
    ("one-step", "independent", True): "472ecda2ea11e890509b522fe232791f",
    ("one-step", "shared", False): "e2b1004385566e4783c6f9bf1ad1df24",
    ("one-step", "shared", True): "4e515d7f534807cd650f6e8f2b22a827",
    ("one-step", "markov", False): "8a9673ef6dad6268466f104734028da7",
    ("one-step", "markov", True): "9960175a8592f3ba71774f9e334697a3",
    ("batch-index", "independent", False): "a87d15e71619085762d3142960647167",
    ("batch-index", "independent", True): "68e609a4d67323ba4aec24a138d7ca5e",
    ("batch-index", "shared", False): "636def9b7bfc725efbb80181eed52349",
    ("batch-index", "shared", True): "53ff4946df17851a0d648a72356b9f4b",
    ("batch-index", "markov", False): "a2d72d74b2134083ed898303dc6864e7",
    ("batch-index", "markov", True): "db2e4f3991ef7e4079b1dfe7e043cc7e",
    ("step-offset", "independent", False): "93e15759366288d7fe8c821cb19b68ab",
    ("step-offset", "shared", False): "9c54917c000d4b8457f55d7972015d9a",
    ("step-offset", "markov", False): "a77c639970bd276414fa991f5400c9c5",
    ("const", "independent", False): "f2b7558ce93d8bad856995a1569c9c5c",
    ("const", "shared", False): "3fea18de1782c78dffc8227ab263477e",
    ("const", "markov", False): "d7c5e2a6fde09d7137f6a597ddeb74a0",
}
PINNED_CHUNKS = {
    ("independent", 1): "f432144f1dfa67a66d369c9ee6b86634",
    ("independent", 2): "2ddcba0bfa4676c8c7a60972473934cd",
    ("independent", 3): "7ae71db26c1de0248d19ea1a15acb3aa",
    ("independent", 7): "4af7a1d95c6d7f48adf3672bbce7d677",
    ("shared", 1): "c004f4b1725fcc6438b5ab7bec66d926",
    ("shared", 2): "6400f8f71cd60e1a61d27a1c10f58d72",
    ("shared", 3): "317be11aeb166c3ee0b88a257ee61d73",
    ("shared", 7): "78ccf1f512e29b5513d1eb7ffddd6416",
    ("markov", 1): "1a59c4955a1210fbc4fb25dda4823fa0",
    ("markov", 2): "6c6e758b7762d6588f033d532ab72593",
    ("markov", 3): "9a589d3afefce43b87f3adb7c04c6c59",
    ("markov", 7): "381c79deafe1f5b0a54536c323f7b8d3",
}
PINNED_UNSAMPLE = {
    ("sdxl", "independent"): "0355d766ac56a5da53947be86bd96501",
    ("sdxl", "shared"): "cb68c45be48fa0176f5fd698edadd6c0",
    ("sdxl", "markov"): "ec0aacba8961d4f0c796115d884ff314",
    ("sd15", "independent"): "c3821df88d592c1e415261d1dcc5f4b5",
    ("sd15", "shared"): "7c028ae66c1a8358fbd0e0241336a196",
    ("sd15", "markov"): "5e33fa524b385dd2ed572dddfc9dcdf7",
    ("sd3", "independent"): "426163e43991836b79dbbddd0b6cfcfa",
    ("sd3", "shared"): "6bea082886928fe8dc1e2ccb4804dee7",
    ("sd3", "markov"): "911e1fdbc609278767688c0acf46449a",
    ("wan21", "independent"): "d808365578b92db88890e27e7560524a",
    ("wan21", "shared"): "7b47f53ff2fcbd8f0d2012e5c3f042df",
    ("wan21", "markov"): "83811999d1d2b1d8cba8d19b272d83d1",
}
PINNED_MESH = {
    "independent": "a101581e9a55ee9fdbe723283a05e9eb",
    "shared": "15f186adc6608c67991cae13324bddae",
    "markov": "40a591fd3b2a78ced12a61c927412b23",
}


def _full(name, seed, shape, dtype, steps, opts, coupling, normalize):
    x = _latent(shape, dtype)
    z = ju.noised_latents(
        jax.random.key(seed), x, _sigmas(steps), coupling=coupling, normalize=normalize, **opts
    )
    return _digest([z])


# Every case without `normalize`, and the cases that differ in rank, dtype or ids with it too
# (the scalar it subtracts is computed by its own program).
FULL = sorted(PINNED_FULL, key=lambda k: (k[2], [c[0] for c in CASES].index(k[0]), COUPLINGS.index(k[1])))


@pytest.mark.parametrize(
    "name, coupling, normalize",
    quick_subset(FULL, 12, ids=["-".join(map(str, k)) for k in FULL], unpack=True),
)
def test_noised_latents_pinned(name, coupling, normalize):
    case = next(c for c in CASES if c[0] == name)
    assert _full(*case, coupling, normalize) == PINNED_FULL[(name, coupling, normalize)]


CHUNKINGS = (1, 2, 3, 7)


# The quick suite takes one coupling in each of the two tests below, a different one in each.
@pytest.mark.parametrize("chunk", quick_subset(CHUNKINGS, 4))
@pytest.mark.parametrize("coupling", quick_subset(COUPLINGS, 3))
def test_noised_latents_chunks_pinned(coupling, chunk):
    x = _latent((2, 4, 6, 6), "float32")
    parts = ju.noised_latents_chunks(
        jax.random.key(21), x, _sigmas(7), chunk_steps=chunk, coupling=coupling, normalize=True, step_offset=3
    )
    assert _digest(parts) == PINNED_CHUNKS[(coupling, chunk)]


@pytest.mark.slow  # five programs per coupling; test_noise's chunk test checks this quickly
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_noised_latents_chunks_concatenate_to_pinned_whole(coupling):
    """Every chunking hashes, concatenated, to the whole batch (a check the pins cannot make alone)."""
    x = _latent((2, 4, 6, 6), "float32")
    whole = ju.noised_latents(
        jax.random.key(21), x, _sigmas(7), coupling=coupling, normalize=True, step_offset=3
    )
    for chunk in CHUNKINGS:
        parts = list(ju.noised_latents_chunks(jax.random.key(21), x, _sigmas(7), chunk_steps=chunk,
                                              coupling=coupling, normalize=True, step_offset=3))  # fmt: skip
        assert _digest([jnp.concatenate(parts)]) == _digest([whole])


UNSAMPLE = [
    ("sdxl", "euler", "karras", 12, 2, 10, "node", (1, 4, 8, 8), "float32"),
    ("sd15", "dpmpp_2m", "normal", 8, 0, 8, "node", (2, 4, 8, 8), "float16"),
    ("sd3", "euler", "simple", 6, 0, 6, "model", (1, 16, 4, 4), "float32"),
    ("wan21", "euler", "simple", 5, 0, 5, "model", (1, 16, 2, 4, 4), "bfloat16"),
]


@pytest.mark.parametrize("coupling", quick_subset(("markov", "independent", "shared"), 3))
@pytest.mark.parametrize("case", quick_subset(UNSAMPLE, 4, ids=[c[0] for c in UNSAMPLE]))
def test_batch_unsample_pinned(case, coupling):
    model, sampler, scheduler, steps, start, end, mode, shape, dtype = case
    out = ju.batch_unsample(
        jax.random.key(31), model, sampler, scheduler, steps, start, end, latent=_latent(shape, dtype),
        normalize=True, mode=mode, coupling=coupling,
    )  # fmt: skip
    leaves = out if isinstance(out, (tuple, list)) else [out]
    assert _digest(leaves) == PINNED_UNSAMPLE[(model, coupling)]


MESH_SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np, jax_unsampler as ju
    from test_noise_pinned import _digest, _latent, _sigmas
    mesh = jax.make_mesh((2,), ("steps",))
    out = {}
    for coupling in ("independent", "shared", "markov"):
        z = ju.noised_latents(jax.random.key(41), _latent((2, 4, 6, 6), "float32"), _sigmas(5),
                              coupling=coupling, normalize=True, mesh=mesh)
        out[coupling] = _digest([z])
    print(json.dumps(out))
    """
)


@pytest.mark.slow  # a second interpreter with two forced host devices
def test_mesh_pinned():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env["PYTHONPATH"] = os.pathsep.join([root, here, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", MESH_SCRIPT], env=env, cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert got == PINNED_MESH
