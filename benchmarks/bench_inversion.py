"""What `inverted_latents`'s loop costs over the denoiser's own calls.

The denoiser is a small convolutional network in pure JAX (3x3 convolutions 4 -> 64 -> 64 -> 4
with SiLU, on an SD1.5-sized 1x4x64x64 latent), a stand-in for a real model's cost per call.
Per solver, two jitted programs make the same number of denoiser calls on the same inputs:

- `denoiser calls alone`: a `lax.fori_loop` that only calls the denoiser, once (Euler) or twice
  (Heun) per step, feeding each output back in.
- `inverted_latents`: the whole inversion (slopes, steps, every state kept and returned).

The overhead is `inverted / alone - 1` of the best of `--repeats` timed calls (compilation
excluded). The issue's bar is 10%.

    python benchmarks/bench_inversion.py             # 20 steps, 1x4x64x64
    python benchmarks/bench_inversion.py --quick     # 8 steps, 1x4x32x32
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_unsampler as ju


def make_denoiser(channels: int = 4, width: int = 64):
    keys = jax.random.split(jax.random.key(0), 3)
    shapes = [(width, channels, 3, 3), (width, width, 3, 3), (channels, width, 3, 3)]
    weights = [jax.random.normal(k, s) / np.sqrt(np.prod(s[1:])) for k, s in zip(keys, shapes, strict=True)]

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def denoiser(x: jax.Array, sigma: jax.Array) -> jax.Array:
        c = jnp.reshape(1 / jnp.sqrt(1 + sigma**2), (-1, 1, 1, 1))
        h = jax.nn.silu(conv(x * c, weights[0]))
        h = jax.nn.silu(conv(h, weights[1]))
        return x - jnp.reshape(sigma, (-1, 1, 1, 1)) * conv(h, weights[2])

    return denoiser


def calls_alone(denoiser, calls: int, per_step: int):
    """A jitted loop of `calls` denoiser calls at the sigmas the inversion uses, and nothing else."""

    @jax.jit
    def alone(x, sigmas):
        def body(i, x):
            return denoiser(x, jnp.full((x.shape[0],), sigmas[i // per_step + 1], jnp.float32))

        return jax.lax.fori_loop(0, calls, body, x)

    return alone


def best_of(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    steps, shape = (8, (1, 4, 32, 32)) if args.quick else (20, (1, 4, 64, 64))
    denoiser = make_denoiser(shape[1])
    latent = jax.random.normal(jax.random.key(1), shape)
    sigmas = ju.unsampler_sigmas(ju.preset("sd15").model_sampling, "euler", "karras", steps + 1)

    print(
        f"{platform.machine()}, {jax.devices()[0].device_kind}, jax {jax.__version__}; {shape}, {steps} steps"
    )
    print("| solver | denoiser calls | calls alone (s) | inverted_latents (s) | overhead |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for solver, per_step in (("euler", 1), ("heun", 2)):
        calls = per_step * (len(sigmas) - 1)

        alone = calls_alone(denoiser, calls, per_step)
        t_alone = best_of(lambda f=alone: f(latent, sigmas), args.repeats)
        t_inv = best_of(
            lambda s=solver: ju.inverted_latents(denoiser, latent, sigmas, sampler=s), args.repeats
        )
        print(f"| {solver} | {calls} | {t_alone:.4f} | {t_inv:.4f} | {100 * (t_inv / t_alone - 1):+.1f}% |")


if __name__ == "__main__":
    main()
