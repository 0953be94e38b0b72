"""Speed and memory of the noised batch: the original node's algorithm against ours, one run.

Each measurement runs in a fresh subprocess, so its peak resident memory is its own. Per case:

- `original (torch)`: the original node's algorithm: `repeat`, `randn_like` after
  `manual_seed`, multiply, add (written rank-generic: the original crashes on 5-D latents).
- `jax.random.normal`: a jitted `jax.random.normal` of the output's size alone: the floor
  JAX's counter-based generator sets for any pure-JAX path.
- `jax_unsampler (JAX noise)`: `noised_latents` with a PRNG key.
- `torch_bridge (torch noise)`: `noised_latents_torch`, identical bits to the original.
- `torch normal_`: `Tensor.normal_` into a preallocated float32 tensor of the output's size:
  torch's fastest CPU normal generator (vectorised, all cores), no latent arithmetic at all.
- `memory fill`: `Tensor.fill_` of a preallocated tensor of the output's size: the machine's
  write limit, which no path that writes its output once can beat.
- `command path (all cores)`: what `jax-unsampler unsample` computes: `noised_latents_chunks`
  over a mesh of one XLA CPU device per core, each chunk brought to the host (no file write).

Reported: steady throughput (best of `--repeats` calls, output elements per second), the
first call (compilation included), and peak RSS of the process minus its RSS once the
libraries are imported and the input exists (so it counts what the call itself holds).

    python benchmarks/bench.py                 # all cases, writes benchmarks/results.md
    python benchmarks/bench.py --quick         # smaller shapes, for a smoke test (about a minute)
    python benchmarks/bench.py --cases SDXL --no-streaming   # one case, no 10000-step run

Also, for the SDXL case: the first call over a steady one, cold and in a second process that
finds the first one's programs in the persistent compilation cache; 50 new step counts of a
schedule in a fresh process; and `jax-unsampler unsample` as a whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

CASES = {
    "SDXL 1024px 1x4x128x128, 1000 steps": dict(family="sdxl", shape=(1, 4, 128, 128), steps=1000),
    "SD1.5 512px 2x4x64x64, 1000 steps": dict(family="sd15", shape=(2, 4, 64, 64), steps=1000),
    "Wan 2.1 video 1x16x5x60x104, 100 steps": dict(family="wan21", shape=(1, 16, 5, 60, 104), steps=100),
}
QUICK = {
    "SDXL 1x4x64x64, 100 steps": dict(family="sdxl", shape=(1, 4, 64, 64), steps=100),
    "Wan 2.1 video 1x16x3x16x16, 20 steps": dict(family="wan21", shape=(1, 16, 3, 16, 16), steps=20),
}
METHODS = (
    "original (torch)",
    "torch normal_",
    "memory fill",
    "jax.random.normal",
    "jax_unsampler (JAX noise)",
    "torch_bridge (torch noise)",
    "command path (all cores)",
)
TORCH_ONLY = ("torch normal_", "memory fill")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(method: str, case: dict, repeats: int, cache_dir: str | None = None) -> dict:
    """Runs in the subprocess: time one method on one case."""
    import numpy as np

    if cache_dir:  # as the command and the node do: every compiled program kept in cache_dir
        from jax_unsampler._compilation_cache import enable_compilation_cache

        enable_compilation_cache(cache_dir)
    if method == "command path (all cores)":
        import jax

        from jax_unsampler.app._cli import cpu_cores

        jax.config.update("jax_num_cpu_devices", cpu_cores())  # what the command does first

    shape, steps = tuple(case["shape"]), case["steps"]
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(shape, dtype=np.float32)
    if method == "original (torch)":
        import torch

        import jax_unsampler as ju  # sigmas only; JAX is imported in every case, to be fair

        p = ju.preset(case["family"])
        s_np = np.asarray(ju.unsampler_sigmas(p.model_sampling, "euler", "karras", steps,
                                              latent_scale_factor=p.latent_scale_factor))  # fmt: skip
        x, s = torch.from_numpy(x_np), torch.from_numpy(s_np.copy())

        def run():
            torch.manual_seed(0)
            batch = x.repeat(len(s), *([1] * (x.ndim - 1)))
            noise = torch.randn_like(batch)
            return batch + noise * s.repeat_interleave(x.shape[0]).view(-1, *([1] * (x.ndim - 1)))

        block = lambda out: out  # noqa: E731  (torch on the CPU is synchronous)
    elif method in TORCH_ONLY:
        import torch

        import jax_unsampler  # noqa: F401  (imported in every case, to be fair)

        out_t = torch.empty((steps * shape[0], *shape[1:]), dtype=torch.float32)
        gen = torch.Generator().manual_seed(0)
        if method == "torch normal_":
            run = lambda: out_t.normal_(generator=gen)  # noqa: E731
        else:
            run = lambda: out_t.fill_(1.5)  # noqa: E731
        run()  # the preallocated tensor is touched once before the baseline, as an output would be
        block = lambda out: out  # noqa: E731
    else:
        import jax
        import jax.numpy as jnp

        import jax_unsampler as ju

        p = ju.preset(case["family"])
        s = ju.unsampler_sigmas(
            p.model_sampling, "euler", "karras", steps, latent_scale_factor=p.latent_scale_factor
        )
        x = jnp.asarray(x_np)
        block = jax.block_until_ready
        if method == "jax.random.normal":
            normal = jax.jit(lambda k: jax.random.normal(k, (steps * shape[0], *shape[1:])))
            keys = iter(jax.random.split(jax.random.key(0), repeats + 1))
            run = lambda: normal(next(keys))  # noqa: E731
        elif method == "jax_unsampler (JAX noise)":
            keys = iter(jax.random.split(jax.random.key(0), repeats + 1))
            run = lambda: ju.noised_latents(next(keys), x, s)  # noqa: E731
        elif method == "command path (all cores)":
            # The command's loop: chunks of at most 64 MB over a mesh of every core's device, each
            # chunk brought to the host (the file write is left out).
            from jax_unsampler.app._cli import _mesh, chunk_steps_for

            mesh, chunk = _mesh(len(jax.devices())), chunk_steps_for(shape, len(s))
            keys = iter(jax.random.split(jax.random.key(0), repeats + 1))

            def run():
                parts = ju.noised_latents_chunks(next(keys), x, s, chunk_steps=chunk, mesh=mesh)
                return [np.asarray(p) for p in parts]

            block = lambda out: out  # noqa: E731
        else:
            import torch

            import torch_bridge as tb

            xt = torch.from_numpy(x_np)
            run = lambda: tb.noised_latents_torch(0, xt, s)  # noqa: E731
    base = _rss_mb()
    t0 = time.perf_counter()
    out = block(run())
    first = time.perf_counter() - t0
    del out
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = block(run())
        times.append(time.perf_counter() - t0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elements = steps * int(np.prod(shape))
    return dict(best=min(times), first=first, peak_mb=peak, base_mb=base, elements=elements)


def _measure(method: str, case: dict, repeats: int, cache_dir: str | None = None) -> dict:
    spec = dict(method=method, case=case, repeats=repeats, cache_dir=cache_dir)
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _step_counts(scheduler: str) -> dict:
    """Runs in a fresh subprocess: the first schedule, then 50 new step counts of the scheduler."""
    import jax_unsampler as ju

    p = ju.preset("sdxl")
    t0 = time.perf_counter()
    ju.unsampler_sigmas(
        p.model_sampling, "euler", scheduler, 20, latent_scale_factor=0.13025
    ).block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for n in range(21, 71):
        ju.unsampler_sigmas(p.model_sampling, "euler", scheduler, n, latent_scale_factor=0.13025)
    return dict(first=first, fifty=time.perf_counter() - t0)


def _first_calls(case: dict, repeats: int) -> dict:
    """The JAX path's first call over a steady one: cold, and in a second process that finds the
    first one's programs in a (fresh) persistent compilation cache."""
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("jax_unsampler (JAX noise)", "command path (all cores)"):
            cold = _measure(method, case, repeats, cache_dir=None)
            _measure(method, case, 1, cache_dir=os.path.join(tmp, method[:3]))  # fills the cache
            cached = _measure(method, case, repeats, cache_dir=os.path.join(tmp, method[:3]))
            out[method] = dict(cold=cold["first"] - cold["best"], cached=cached["first"] - cached["best"])
    return out


def _command_process(case: dict) -> dict:
    """Wall time of `jax-unsampler unsample` as a process on the case (cache warm, then off)."""
    import tempfile

    import numpy as np

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp, "x.npy")
        np.save(src, np.random.default_rng(0).standard_normal(case["shape"], dtype=np.float32))
        out_file, cache = pathlib.Path(tmp, "o.latent"), pathlib.Path(tmp, "c")
        argv = [sys.executable, "-m", "jax_unsampler", "unsample", str(src), "--out", str(out_file),
                "--model", case["family"], "--steps", str(case["steps"])]  # fmt: skip
        argv += ["--cache-dir", str(cache)]
        for label, extra in (("cache filled", []), ("cached", []), ("no cache", ["--no-cache"])):
            t0 = time.perf_counter()
            subprocess.run(argv + extra, check=True, capture_output=True)
            out[label] = time.perf_counter() - t0
    return out


def _streaming() -> dict:
    """The command on the node's default 10000 steps of a 1024 px SDXL latent, streamed to disk."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        src, out = pathlib.Path(tmp, "x.npy"), pathlib.Path(tmp, "out.latent")
        np.save(src, np.random.default_rng(0).standard_normal((1, 4, 128, 128), dtype=np.float32))
        argv = ["unsample", str(src), "--out", str(out), "--model", "sdxl", "--steps", "10000"]
        # A child that reports its own peak RSS (RUSAGE_CHILDREN would include earlier children).
        code = (
            "import json, resource, sys; from jax_unsampler.app import main; "
            f"code = main({argv!r}); "
            "print(json.dumps(dict(code=code, peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))"
        )
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["code"] == 0, done.stderr
        return dict(seconds=seconds, peak_mb=report["peak"] / 1024, bytes=out.stat().st_size)


def _table(results: dict) -> str:
    lines = [
        "| case | method | Melem/s | vs original | vs torch normal_ | vs memory fill | "
        "vs jax.random.normal | first call (s) | steady (s) | peak RSS over baseline (MB) | output (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, per in results.items():
        rate = {m: r["elements"] / r["best"] for m, r in per.items()}
        for m, r in per.items():
            lines.append(
                f"| {name} | {m} | {rate[m] / 1e6:.0f} | {rate[m] / rate['original (torch)']:.2f}x | "
                f"{rate[m] / rate['torch normal_']:.2f}x | {rate[m] / rate['memory fill']:.3f}x | "
                f"{rate[m] / rate['jax.random.normal']:.2f}x | {r['first']:.2f} | {r['best']:.3f} | "
                f"{r['peak_mb'] - r['base_mb']:.0f} | {r['elements'] * 4 / 2**20:.0f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="", help="only the cases whose name contains this text")
    parser.add_argument("--no-streaming", action="store_true", help="skip the 10000-step streaming run")
    parser.add_argument("--note", default="", help="a line under the header (e.g. machine shared)")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        if spec.get("steps_child"):
            print(json.dumps(_step_counts(spec["steps_child"])), flush=True)
            os._exit(0)
        print(
            json.dumps(_child(spec["method"], spec["case"], spec["repeats"], spec["cache_dir"])), flush=True
        )
        os._exit(0)  # torch's and XLA's thread pools can abort each other's teardown at exit
    import jax
    import torch

    results = {}
    for name, case in (QUICK if args.quick else CASES).items():
        if args.cases not in name:
            continue
        results[name] = {}
        for method in METHODS:
            results[name][method] = r = _measure(method, case, args.repeats)
            print(f"{name:45s} {method:28s} {r['elements'] / r['best'] / 1e6:8.0f} Melem/s", flush=True)
    sdxl = {n: c for n, c in (QUICK if args.quick else CASES).items() if args.cases in n and "SDXL" in n}
    firsts = {name: _first_calls(case, args.repeats) for name, case in sdxl.items()}
    steps = {}
    for sch in ("karras", "normal"):
        child = [sys.executable, __file__, "--child", json.dumps(dict(steps_child=sch))]
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        steps[sch] = json.loads(done.stdout.splitlines()[-1])
    commands = {name: _command_process(case) for name, case in sdxl.items()}
    stream = None if args.quick or args.no_streaming else _streaming()
    header = (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, jax {jax.__version__}, torch {torch.__version__}; "
        f"best of {args.repeats} calls; {time.strftime('%Y-%m-%d')}.\n\n"
    )
    if args.note:
        header += args.note + "\n\n"
    text = header + _table(results) + "\n"
    text += (
        f"\nThe command path: `noised_latents_chunks` over a mesh of {os.cpu_count()} XLA CPU devices "
        "(one per core), each chunk brought to the host, as `jax-unsampler unsample` runs it (file "
        "writes left out).\n"
    )
    for name, f in firsts.items():
        for method, r in f.items():
            text += (
                f"\nFirst call over steady, {name}, {method}: {r['cold']:.2f} s cold (no cache), "
                f"{r['cached']:.2f} s in a second process with the persistent compilation cache."
            )
    text += "\n"
    for sch, r in steps.items():
        text += (
            f"\nSchedules, a fresh process: the first `unsampler_sigmas(..., '{sch}', 20)` "
            f"{r['first']:.2f} s, then 50 new step counts (21 to 70) {r['fifty'] * 1000:.0f} ms in all."
        )
    text += "\n"
    for name, r in commands.items():
        times = ", ".join(f"{k} {v:.1f} s" for k, v in r.items())
        text += f"\n`jax-unsampler unsample` as a process, {name} (load, schedule, compile, write): {times}."
    text += "\n"
    if stream:
        text += (
            f"\nStreaming: `jax-unsampler unsample` of a 1x4x128x128 SDXL latent, 10000 steps "
            f"({stream['bytes'] / 2**30:.2f} GiB written): {stream['seconds']:.1f} s, "
            f"peak RSS {stream['peak_mb']:.0f} MB for the whole process.\n"
        )
    print("\n" + text)
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
