"""The noised batch over a mesh that spans processes: two local JAX processes, the pinned bits.

Each process joins `jax.distributed.initialize` (CPU, gloo collectives, a loopback coordinator
on a free port) with two XLA CPU devices of its own, builds a one-axis mesh over all four
devices (`jax.devices()`), runs `noised_latents(..., mesh=mesh)` and gathers the whole batch
with `multihost_utils.process_allgather`, whole and streamed in chunks. Both must print the
pinned hashes of test_noise_pinned.py's mesh case: the same bits as one process on one device.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

from test_noise_pinned import PINNED_MESH

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    port, process_id = int(sys.argv[1]), int(sys.argv[2])
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=60)
    import numpy as np
    from jax.experimental import multihost_utils
    gather = multihost_utils.process_allgather
    import jax_unsampler as ju
    from test_noise_pinned import _digest, _latent, _sigmas
    assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("steps",))
    out = {}
    for coupling in ("independent", "shared", "markov"):
        z = ju.noised_latents(jax.random.key(41), _latent((2, 4, 6, 6), "float32"), _sigmas(5),
                              coupling=coupling, normalize=True, mesh=mesh)
        assert len(z.sharding.device_set) == 4
        out[coupling] = _digest([multihost_utils.process_allgather(z, tiled=True)])
        # Streamed: chunks of 2 steps (the last one cut from a padded chunk), concatenated.
        parts = ju.noised_latents_chunks(jax.random.key(41), _latent((2, 4, 6, 6), "float32"), _sigmas(5),
                                         chunk_steps=2, coupling=coupling, normalize=True, mesh=mesh)
        # Markov chunks run on each process's own device (a chain is sequential): whole there.
        whole = lambda p: np.asarray(p) if p.is_fully_addressable else gather(p, tiled=True)
        gathered = [whole(p) for p in parts]
        out[coupling + " chunks"] = _digest([np.concatenate(gathered)])
    print(json.dumps(out), flush=True)
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_pinned_bits():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(port), str(i)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    expected = {**PINNED_MESH, **{f"{c} chunks": h for c, h in PINNED_MESH.items()}}
    assert results == [expected, expected]
