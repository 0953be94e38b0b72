"""noised_latents(mesh=...): steps spread over devices, same bits as one device.

The device count of the CPU backend is fixed when JAX starts, so the checks run in a
subprocess with `--xla_force_host_platform_device_count=4`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_unsampler as ju

pytestmark = pytest.mark.slow  # a second interpreter with four forced host devices: about a minute

SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np, jax_unsampler as ju
    assert len(jax.devices()) == 4
    results = []
    x = jax.random.normal(jax.random.key(1), (2, 4, 6, 6))
    explicit = jax.make_mesh((4,), ("steps",))
    auto = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
    ms = ju.preset("sd15").model_sampling
    for n in (1, 2, 5, 8, 11):
        s = ju.unsampler_sigmas(ms, "euler", "karras", n)
        for coupling in ju.COUPLINGS:
            for normalize in (False, True):
                opts = dict(coupling=coupling, normalize=normalize)
                one = np.asarray(ju.noised_latents(jax.random.key(3), x, s, **opts))
                for name, mesh in (("explicit", explicit), ("auto", auto)):
                    z = ju.noised_latents(jax.random.key(3), x, s, mesh=mesh, **opts)
                    results.append(dict(
                        n=n, coupling=coupling, normalize=normalize, mesh=name,
                        equal=bool((np.asarray(z) == one).all()), shape=list(z.shape),
                        shards=len({s.device for s in z.addressable_shards}),
                        sharded=len(z.sharding.device_set) == 4 and not z.sharding.is_fully_replicated,
                    ))
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def sharded_results():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_coupling_and_length_matches_one_device(sharded_results):
    assert len(sharded_results) == 5 * 3 * 2 * 2
    mismatched = [r for r in sharded_results if not r["equal"]]
    assert not mismatched, mismatched[:3]


def test_result_is_sharded_along_the_batch_axis_when_it_divides(sharded_results):
    for r in sharded_results:
        assert r["shape"][0] == r["n"] * 2
        if (r["n"] * 2) % 4 == 0:
            assert r["sharded"] and r["shards"] == 4, r


def test_mesh_must_have_one_axis():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match=r"mesh must have exactly one axis.*\('a', 'b'\)"):
        ju.noised_latents(jax.random.key(0), jnp.zeros((1, 2, 2)), jnp.ones((3,)), mesh=mesh)


def test_mesh_must_be_a_mesh():
    with pytest.raises(ValueError, match=r"mesh must be a jax.sharding.Mesh, got str"):
        ju.noised_latents(jax.random.key(0), jnp.zeros((1, 2, 2)), jnp.ones((3,)), mesh="cpu:0-3")
