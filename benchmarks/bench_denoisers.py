"""What the denoiser rule costs (docs/denoisers.md): a traced denoiser (a closure, an object)
is traced at every call, a pytree denoiser is not. For a Flax NNX MLP and a small NNX conv net,
prints per call: the trace alone (`split_denoiser`), a warm `sample` through each path, and
one step of the loop (the warm call over the steps); plus the first call of a fresh process
on each path.

    python benchmarks/bench_denoisers.py            # writes benchmarks/denoisers.md
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASE = textwrap.dedent(
    """
    import time, statistics
    import jax, jax.numpy as jnp
    from flax import nnx
    import jax_unsampler as ju
    from jax_unsampler._denoiser_args import split_denoiser

    class MLP(nnx.Module):
        def __init__(self, rngs, width=512, depth=6):
            sizes = [65] + [width] * depth
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
            self.out = nnx.Linear(width, 64, rngs=rngs)
        def __call__(self, x, s):
            h = jnp.concatenate([x.reshape(x.shape[0], -1), jnp.log(s)[:, None]], 1)
            for layer in self.layers:
                h = jax.nn.gelu(layer(h))
            return self.out(h).reshape(x.shape)

    class Conv(nnx.Module):
        def __init__(self, rngs, ch=64, depth=8):
            self.first = nnx.Conv(4, ch, (3, 3), rngs=rngs)
            self.blocks = nnx.List([nnx.Conv(ch, ch, (3, 3), rngs=rngs) for _ in range(depth)])
            self.last = nnx.Conv(ch, 4, (3, 3), rngs=rngs)
        def __call__(self, x, s):
            h = self.first(jnp.moveaxis(x, 1, -1))
            for b in self.blocks:
                h = h + jax.nn.silu(b(h)) * (1 / (1 + s[:, None, None, None]))
            return jnp.moveaxis(self.last(h), -1, 1)

    model = {"mlp": MLP, "conv": Conv}[KIND](nnx.Rngs(0))
    x = jnp.ones({"mlp": (2, 1, 8, 8), "conv": (2, 4, 32, 32)}[KIND], jnp.float32)
    sigmas = ju.ksampler_sigmas(ju.preset("sd15").model_sampling, "euler", "karras", 20)
    d = model if PATH == "pytree" else (lambda v, s: model(v, s))
    t0 = time.perf_counter()
    jax.block_until_ready(ju.sample(d, x, sigmas, sampler="euler"))
    first = time.perf_counter() - t0
    def best(f, n=7):
        out = []
        for _ in range(n):
            t = time.perf_counter(); jax.block_until_ready(f()); out.append(time.perf_counter() - t)
        return min(out)
    warm = best(lambda: ju.sample(d, x, sigmas, sampler="euler"))
    closure = lambda v, s: model(v, s)
    trace = best(lambda: split_denoiser("sample", closure, x)[0]) if PATH == "traced" else 0.0
    print(f"{first:.3f} {warm:.4f} {trace:.4f}")
    """
)


def run(kind: str, path: str) -> list[float]:
    code = f"KIND = {kind!r}\nPATH = {path!r}\n" + CASE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return [float(v) for v in out.stdout.split()]


def main() -> None:
    rows = []
    for kind in ("mlp", "conv"):
        pt = run(kind, "pytree")
        tr = run(kind, "traced")
        step = pt[1] / 20
        rows.append(
            f"| {kind} | {pt[0]:.2f} s | {tr[0]:.2f} s | {pt[1] * 1e3:.1f} ms | {tr[1] * 1e3:.1f} ms "
            f"| {tr[2] * 1e3:.1f} ms | {step * 1e3:.2f} ms | {tr[2] / step:.1f} |"
        )
    text = "\n".join(
        [
            "# What the denoiser rule costs",
            "",
            "Written by `python benchmarks/bench_denoisers.py`; "
            f"{platform.machine()}, {platform.python_version()}, CPU, 20 euler steps.",
            "mlp: an NNX MLP (6 x 512, batch 2 of 1x8x8); conv: an NNX conv net (10 3x3 convolutions,",
            "64 channels, batch 2 of 4x32x32). Pytree: the module passed itself; traced: the same",
            "module in a closure (`lambda x, s: model(x, s)`), traced at every call.",
            "",
            "| model | first call, pytree | first call, traced | warm call, pytree | warm call, traced "
            "| the trace alone | one step | trace / step |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    (ROOT / "benchmarks" / "denoisers.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
