"""The noised batch on a CUDA GPU: throughput lines and CPU-against-GPU bits, in one command.

    python benchmarks/bench_gpu.py            # the SDXL 1000-step case
    python benchmarks/bench_gpu.py --quick    # a small case (what CI runs, on its CPU)

Lines (steady time, best of `--repeats`, and the first call):

- CPU: `noised_latents` on JAX's CPU device, and torch's `Tensor.normal_` into a preallocated
  CPU tensor of the output's size.
- GPU (only where JAX and torch both see a CUDA device; otherwise reported as skipped):
  `noised_latents` on the GPU, `torch.randn` of the output's size on the GPU, and a device
  memory fill (`Tensor.fill_` of a preallocated GPU tensor: the write limit).

Bits: for every pinned case of tests/test_noise_pinned.py and every coupling, the threefry bits
behind the noise (`jax.random.bits` of each step's and item's key) must be identical on CPU
and GPU, and the pinned hash must hold on the CPU; the script reports the largest difference
of the float batches (the normal transform and the arithmetic may round differently on the GPU).
It exits with status 1 if any bit differs. Without a GPU only the CPU half runs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

CASES = {
    "SDXL 1024px 1x4x128x128, 1000 steps": ((1, 4, 128, 128), 1000),
    "quick: SDXL 1x4x32x32, 20 steps": ((1, 4, 32, 32), 20),
}


def _time(run, block, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    block(run())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(run())
        best = min(best, time.perf_counter() - t0)
    return first, best


def _gpus():
    """`(jax GPU device, torch)` where both see a CUDA device, else None."""
    import jax

    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        return None
    try:
        import torch
    except ImportError:
        return None
    return (device, torch) if torch.cuda.is_available() else None


def throughput(shape: tuple[int, ...], steps: int, repeats: int) -> list[tuple[str, str]]:
    """`(line name, result)` for every line; GPU lines say `skipped` without a GPU."""
    import jax
    import numpy as np

    import jax_unsampler as ju

    p = ju.preset("sdxl")
    sigmas = np.asarray(
        ju.unsampler_sigmas(p.model_sampling, "euler", "karras", steps, latent_scale_factor=0.13025)
    )
    latent = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    elements = steps * int(np.prod(shape))
    lines = []

    def line(name: str, run, block) -> None:
        first, best = _time(run, block, repeats)
        lines.append(
            (name, f"{elements / best / 1e6:8.0f} Melem/s  steady {best:.4f} s  first call {first:.2f} s")
        )

    cpu = jax.devices("cpu")[0]
    keys = iter(jax.random.split(jax.random.key(0), 2 * repeats + 4))
    x_cpu, s_cpu = jax.device_put(latent, cpu), jax.device_put(sigmas, cpu)
    line("CPU  jax_unsampler noised_latents", lambda: ju.noised_latents(next(keys), x_cpu, s_cpu),
         jax.block_until_ready)  # fmt: skip
    try:
        import torch
    except ImportError:
        lines.append(("CPU  torch normal_", "skipped (torch is not installed)"))
    else:
        out = torch.empty((elements,), dtype=torch.float32)
        line("CPU  torch normal_", lambda: out.normal_(), lambda o: o)
    gpus = _gpus()
    if gpus is None:
        for name in ("GPU  jax_unsampler noised_latents", "GPU  torch.randn", "GPU  memory fill"):
            lines.append((name, "skipped (no CUDA device seen by both JAX and torch)"))
        return lines
    gpu, torch = gpus
    x_gpu, s_gpu = jax.device_put(latent, gpu), jax.device_put(sigmas, gpu)
    line("GPU  jax_unsampler noised_latents", lambda: ju.noised_latents(next(keys), x_gpu, s_gpu),
         jax.block_until_ready)  # fmt: skip
    sync = lambda o: torch.cuda.synchronize()  # noqa: E731
    line("GPU  torch.randn", lambda: torch.randn((elements,), device="cuda"), sync)
    buffer = torch.empty((elements,), dtype=torch.float32, device="cuda")
    line("GPU  memory fill", lambda: buffer.fill_(1.5), sync)
    return lines


def compare_bits() -> tuple[list[str], bool]:
    """CPU against GPU on the pinned cases: `(report lines, every bit identical)`."""
    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    import test_noise_pinned as pinned

    import jax_unsampler as ju

    cpu, gpus = jax.devices("cpu")[0], _gpus()
    report, ok = [], True
    for name, seed, shape, dtype, steps, opts in pinned.CASES:
        for coupling in pinned.COUPLINGS:

            def batch(seed=seed, shape=shape, dtype=dtype, steps=steps, opts=opts, coupling=coupling):
                latent, sigmas = pinned._latent(shape, dtype), pinned._sigmas(steps)
                return ju.noised_latents(jax.random.key(seed), latent, sigmas, coupling=coupling, **opts)

            with jax.default_device(cpu):
                z_cpu = batch()
                pin = pinned.PINNED_FULL.get((name, coupling, False))
                if pin is not None and pinned._digest([z_cpu]) != pin:
                    ok = False
                    report.append(f"{name} {coupling}: CPU hash differs from the pinned one")
            if gpus is None:
                continue
            key, items = jax.random.key(seed), opts.get("batch_index", range(shape[0]))
            offset = opts.get("step_offset", 0)
            keys = [
                jax.random.fold_in(jax.random.fold_in(key, offset + i), b)
                for i in range(steps)
                for b in items
            ]
            bits = {d: np.stack([np.asarray(jax.random.bits(jax.device_put(k, d), shape[1:])) for k in keys])
                    for d in (cpu, gpus[0])}  # fmt: skip
            same_bits = np.array_equal(bits[cpu], bits[gpus[0]])
            ok &= same_bits
            with jax.default_device(gpus[0]):
                z_gpu = batch()
            diff = np.max(np.abs(np.asarray(z_cpu, np.float64) - np.asarray(z_gpu, np.float64)))
            verdict = "identical" if same_bits else "DIFFER"
            report.append(
                f"{name:12s} {coupling:12s} threefry bits {verdict}; largest float difference {diff:.3g}"
            )
    if gpus is None:
        report.append("GPU comparison skipped (no CUDA device); CPU hashes checked against the pinned ones")
    return report, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small case (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import jax

    name = next(n for n in CASES if n.startswith("quick") == args.quick)
    print(f"jax {jax.__version__}, default backend {jax.default_backend()}; {name}")
    for line, result in throughput(*CASES[name], args.repeats):
        print(f"{line:36s} {result}")
    report, ok = compare_bits()
    print("\n".join(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
