"""Loop overhead of iterative mixing: the mixing sampler against its denoiser alone.

At 1x4x128x128 and 30 steps (an SDXL 1024px latent), with a trivial denoiser (the exact
Gaussian denoiser: a handful of elementwise operations), times jitted, steady state (best of
`--repeats` calls (default 200: a call takes well under a millisecond), compilation excluded):

- `denoiser alone`: the same 30 denoiser calls in a `lax.scan`, feeding each output back;
- `denoiser + reading z'[i]`: the same loop that also reads step i's noised latent and adds it
  with a weight in the same pass: the least any mixing loop must do (at this size the latent
  stays in cache between steps, while each z'[i] is read from memory once);
- `sample (euler)` and `(dpmpp_2m)`: `ju.sample`, no mixing;
- `iterative_mixing_sample (euler / dpmpp_2m, addition)` and `(euler, slerp)`.

Prints a Markdown table with each time and its overhead over the denoiser alone and over the
denoiser plus the read of z'[i].

    python benchmarks/bench_mixing.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import jax_unsampler as ju

SHAPE, STEPS = (1, 4, 128, 128), 30


def denoiser(x: jax.Array, sigma: jax.Array) -> jax.Array:
    s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return 0.64 / (0.64 + s * s) * x


def _best(f, *args, repeats: int) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    sigmas = ju.calculate_sigmas(ju.preset("sdxl").model_sampling, "karras", STEPS)
    latent = jax.random.normal(jax.random.key(0), SHAPE)
    noised = ju.noised_latents(jax.random.key(1), latent, sigmas)

    @jax.jit
    def alone(x, sigmas):
        def body(x, s):
            return denoiser(x, jnp.broadcast_to(s, (x.shape[0],))), None

        return jax.lax.scan(body, x, sigmas[:-1])[0]

    @jax.jit
    def alone_reading(x, sigmas, noised):
        def body(x, inp):
            i, s, w = inp
            z = jax.lax.dynamic_index_in_dim(noised, i, keepdims=False)
            return (1 - w) * z + w * denoiser(x, jnp.broadcast_to(s, (x.shape[0],))), None

        steps = sigmas.shape[0] - 1
        return jax.lax.scan(body, x, (jnp.arange(steps), sigmas[:-1], jnp.linspace(0.0, 1.0, steps)))[0]

    def mixing(sampler, function):
        return jax.jit(
            lambda x, s, z: ju.iterative_mixing_sample(
                denoiser, x, s, z, sampler=sampler, blending_function=function
            )
        )

    rows = [("denoiser alone (30 calls in a scan)", _best(alone, noised[:1], sigmas, repeats=args.repeats))]
    rows.append(("denoiser + reading z'[i] (one pass per step)",
                 _best(alone_reading, noised[:1], sigmas, noised, repeats=args.repeats)))  # fmt: skip
    plain = jax.jit(lambda x, s: ju.sample(denoiser, x, s, sampler="euler"))
    rows.append(("sample (euler, no mixing)", _best(plain, noised[:1], sigmas, repeats=args.repeats)))
    plain_2m = jax.jit(lambda x, s: ju.sample(denoiser, x, s, sampler="dpmpp_2m"))
    rows.append(("sample (dpmpp_2m, no mixing)", _best(plain_2m, noised[:1], sigmas, repeats=args.repeats)))
    for sampler, function in (("euler", "addition"), ("dpmpp_2m", "addition"), ("euler", "slerp")):
        f = mixing(sampler, function)
        rows.append((f"iterative_mixing_sample ({sampler}, {function})",
                     _best(f, latent, sigmas, noised, repeats=args.repeats)))  # fmt: skip
    base, floor = rows[0][1], rows[1][1]
    print(f"{jax.devices()[0].platform}, {SHAPE}, {STEPS} steps\n")
    print("| path | time (ms) | over the denoiser alone | over denoiser + reading z'[i] |")
    print("|---|---:|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.2f} | {100 * (t / base - 1):+.0f}% | {100 * (t / floor - 1):+.0f}% |")


if __name__ == "__main__":
    main()
