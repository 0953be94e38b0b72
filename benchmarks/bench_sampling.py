"""Resource use of the sampling loops: rewind's compile time against its passes, peak memory of
inversion and rewind, and memory over a sweep of closure denoisers (issue 22's figures); with
`--samplers`, every sampler's first call, compile time and cost a step (issue 26's).

    python benchmarks/bench_sampling.py [--quick]
    python benchmarks/bench_sampling.py --samplers [--quick]   # writes benchmarks/samplers.md

Each measurement runs in a fresh process (`ru_maxrss` is a process's peak); "over baseline" is
the peak minus the process's resident memory once JAX is loaded and the inputs exist. Prints a
Markdown table (appended to benchmarks/results.md by hand, with the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = textwrap.dedent(
    """
    import gc, json, resource, time
    import jax, jax.numpy as jnp
    import jax_unsampler as ju
    from jax_unsampler._mixing import rewind_ranges

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def den(x, sigma):
        sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        return 0.64 / (0.64 + sig**2) * x
    """
)

REWIND_COMPILE = """
steps, lo = {steps}, {lo}
passes = len(rewind_ranges(steps, lo, 0.999)) if lo else 1
x = jnp.ones((1, 1, 2, 2))
s = jnp.concatenate([jnp.geomspace(10.0, 0.05, steps), jnp.zeros(1)])
def mix(x, s):
    return ju.iterative_mixing_sample(den, x, s, rewind=bool(lo), rewind_min=lo, key=jax.random.key(0))
f = jax.jit(mix)
t = time.perf_counter(); f.lower(x, s).compile(); t = time.perf_counter() - t
print(json.dumps({{"passes": passes, "steps": steps, "compile_s": t}}))
"""

PEAK = """
x = jax.random.normal(jax.random.key(0), (1, 4, 128, 128))
s = jnp.concatenate([jnp.geomspace(14.6, 0.03, {steps}), jnp.zeros(1)])
noised = ju.noised_latents(jax.random.key(1), x, s) if {mixing} else None
jax.block_until_ready(noised)
gc.collect(); base = rss_mb()
if {mixing}:
    out = ju.iterative_mixing_sample(
        den, x, s, noised, rewind={rewind}, rewind_min=0.3, key=jax.random.key(2)
    )
else:
    out = ju.inverted_latents(den, x, s[::-1])
jax.block_until_ready(out)
print(json.dumps({{"peak_over_baseline_mb": peak_mb() - base, "result_mb": out.nbytes / 2**20,
                  "inputs_mb": 0 if noised is None else noised.nbytes / 2**20}}))
"""

CLOSURES = """
x = jnp.ones((1, 4, 64, 64)) * 0.5
s = jnp.array([3.0, 1.0, 0.0])
make = lambda v: (lambda x, sigma: den(x, sigma) + 0 * jnp.mean(v))
ju.sample(make(jnp.ones((4, 1024, 1024))), x, s, sampler="euler").block_until_ready()
gc.collect(); base = rss_mb()
for k in range({n}):
    v = jnp.full((4, 1024, 1024), float(k))  # 16 MB each
    ju.sample(make(v), x, s, sampler="euler").block_until_ready()
    del v
gc.collect()
print(json.dumps({{"closures": {n}, "rss_growth_mb": rss_mb() - base}}))
"""


SAMPLER = """
import statistics
ms = ju.preset("sd15").model_sampling
k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
w1 = jax.random.normal(k1, (5, 64)) * 0.5
w2 = jax.random.normal(k2, (64, 4)) * 0.1

def mlp(x, sigma):  # a small per-pixel MLP predicting eps: a researcher's toy denoiser
    s = sigma.reshape(-1, 1, 1, 1)
    h = jnp.concatenate([x / jnp.sqrt(1 + s**2), jnp.broadcast_to(jnp.log(s) / 4, x[:, :1].shape)], 1)
    h = jnp.tanh(jnp.einsum("bchw,cd->bdhw", h, w1))
    return x - s * jnp.einsum("bdhw,dc->bchw", h, w2)

name = {name!r}
x = jax.random.normal(k3, (1, 4, 32, 32)) * 14.6
sig = {{n: jnp.asarray(ju.calculate_sigmas(ms, "karras", n)) for n in (20, 80)}}
def call(x, s):
    return ju.sample(mlp, x, s, sampler=name, key=jax.random.key(1), model_sampling=ms)
t = time.perf_counter(); jax.block_until_ready(call(x, sig[20])); first = time.perf_counter() - t
compiles = {{}}
for n in (20, 80):
    t = time.perf_counter()
    f = jax.jit(call).lower(x, sig[n]).compile()
    compiles[n] = time.perf_counter() - t
f = jax.jit(call).lower(x, sig[20]).compile()
def timed(g, *a, reps=7):
    out = []
    for _ in range(reps):
        t = time.perf_counter(); jax.block_until_ready(g(*a)); out.append(time.perf_counter() - t)
    return statistics.median(out)
run_s = timed(f, x, sig[20])
def den_loop(x, s):  # the denoiser alone, 20 calls in a scan as the sampler's loop makes them
    return jax.lax.scan(lambda x, s: (mlp(x, s[None]), None), x, s[:20])[0]
d = jax.jit(den_loop).lower(x, sig[20]).compile()
den_s = timed(d, x, sig[20]) / 20
print(json.dumps({{"first_s": first, "compile_20_s": compiles[20], "compile_80_s": compiles[80],
                  "step_ms": run_s / 20 * 1e3, "den_ms": den_s * 1e3}}))
"""


def samplers_table(quick: bool) -> str:
    """Every sampler in a fresh process: what a user meets first, and what a step costs."""
    sys.path.insert(0, str(ROOT))
    from jax_unsampler._names import SAMPLERS
    from jax_unsampler._steps import SAMPLER_STEPS

    names = ("euler", "heun", "dpmpp_2m", "lcm") if quick else SAMPLERS
    rows = [
        "| sampler | first call, 20 steps | compile, 20 / 80 steps | a step | over its denoiser calls |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    euler = None
    for name in names:
        r = run(SAMPLER.format(name=name))
        spec = SAMPLER_STEPS[name]
        over = "—" if not spec.fixed_grid else f"{r['step_ms'] - spec.calls * r['den_ms']:+.2f} ms"
        euler = r["first_s"] if name == "euler" else euler
        rows.append(
            f"| `{name}` | {r['first_s']:.2f} s | {r['compile_20_s']:.2f} / {r['compile_80_s']:.2f} s "
            f"| {r['step_ms']:.2f} ms | {over} |"
        )
        print(rows[-1], flush=True)
    head = (
        f"Each sampler in a fresh process on {platform.machine()} ({os.cpu_count()} cores, "
        f"shared): `ju.sample` of a 1x4x32x32 latent with a small per-pixel MLP denoiser (one call "
        f"{r['den_ms']:.2f} ms) on 20 karras steps of SD1.5 (`benchmarks/bench_sampling.py --samplers`). "
        '"First call" is what a user meets (tracing, compiling, running); "over its denoiser calls" '
        "is a step's time less its denoiser calls' (the sampler's own arithmetic).\n\n"
    )
    return head + "\n".join(rows) + "\n"


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases (CI's smoke run)")
    parser.add_argument(
        "--samplers", action="store_true", help="every sampler: writes benchmarks/samplers.md"
    )
    args = parser.parse_args()
    if args.samplers:
        table = samplers_table(args.quick)
        if not args.quick:
            (ROOT / "benchmarks" / "samplers.md").write_text(table)
        return
    print("| what | setting | figure |\n| --- | --- | ---: |")
    cases = (
        [(100, 0.0), (1000, 0.005)] if args.quick else [(100, 0.0), (200, 0.1), (500, 0.02), (1000, 0.005)]
    )
    for steps, lo in cases:
        r = run(REWIND_COMPILE.format(steps=steps, lo=lo))
        setting = f"1x1x2x2, {r['steps']} steps, {r['passes']} passes"
        print(f"| rewind compile time | {setting} | {r['compile_s']:.2f} s |")
    steps = 50 if args.quick else 1000
    for name, mixing, rewind in (("inverted_latents", False, False), ("mixing + rewind (0.3)", True, True)):
        r = run(PEAK.format(steps=steps, mixing=mixing, rewind=rewind))
        print(
            f"| {name} peak over baseline | 1x4x128x128, {steps} steps | {r['peak_over_baseline_mb']:.0f} MB "
            f"(result {r['result_mb']:.0f} MB, inputs {r['inputs_mb']:.0f} MB) |"
        )
    n = 4 if args.quick else 40
    r = run(CLOSURES.format(n=n))
    growth = r["rss_growth_mb"]
    print(f"| memory after a sweep of closures | {n} lambdas, each over a 16 MB array | {growth:+.0f} MB |")


if __name__ == "__main__":
    main()
