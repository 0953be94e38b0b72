"""Record reference numbers from ComfyUI and the original ComfyUI-Iterative-Mixer code.

Runs, with torch on the CPU:

- the original node pack's iterative mixing samplers (`IterativeMixingSampler.__call__`, as
  ComfyUI's KSAMPLER calls it), its blending schedules and blending functions, imported from
  a temporary extraction of its git mirror (nothing of it is copied into the project);
- ComfyUI's own `sample_euler`, `sample_dpmpp_2m`, `sample_lcm`;
- ComfyUI's `calculate_input` / `calculate_denoised` / `timestep` for every model type,

with two torch denoisers (the exact denoiser of Gaussian data and a nonlinear one, written
again in JAX by the tests), and stores inputs and outputs in `tests/data/iterative_mixer.npz`
(`index`: a JSON list of records; arrays named `<kind><i>_<name>`).

    python tools/record_iterative_mixer.py [--comfyui PATH] [--mirror PATH]

Both default to the reference trees beside the checkout (`../shared/reference/ComfyUI` and
`../shared/reference/ComfyUI-Iterative-Mixer`); `--mirror` also takes a git directory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "iterative_mixer.npz"

# The toy data and denoisers (tests/mixing_denoisers.py has the JAX twins).
MU_SCALE = 0.5


def gaussian_denoiser(mu: torch.Tensor, s: float):
    """E[x0 | x] for x0 ~ N(mu, s^2 I) and x = x0 + sigma * eps."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return mu + s**2 / (s**2 + sig**2) * (x - mu)

    return denoise


def nonlinear_denoiser(mu: torch.Tensor):
    """A smooth nonlinear toy: tanh of a sigma-dependent mix."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        c = 1 / (1 + sig**2)
        return torch.tanh(c * x + (1 - c) * mu) + 0.1 * x * c

    return denoise


REFERENCE = ROOT.parent / "shared" / "reference"
SOURCES = ("__init__.py", "samplers/__init__.py", "utils/__init__.py", "utils/noise.py")


def extract_mirror(mirror: str | pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """The original's Python sources copied into `dest` from a source tree (the reference
    tree) or a git directory (its HEAD), under a package name of their own."""
    pack = dest / "iterative_mixer_pack"
    pack.mkdir()
    tree = pathlib.Path(mirror)
    # The Python sources only (a mirror may lack the blobs of its pictures).
    for path in SOURCES:
        if (tree / path).is_file():
            text = (tree / path).read_bytes()
        else:
            text = subprocess.run(
                ["git", "-C", str(mirror), "show", f"HEAD:{path}"], check=True, capture_output=True
            ).stdout
        (pack / path).parent.mkdir(parents=True, exist_ok=True)
        (pack / path).write_bytes(text)
    return pack


def import_original(pack: pathlib.Path):
    """The pack's `samplers` module (its package imported without nodes.py, which needs a UI)."""
    parent = str(pack.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    package = types.ModuleType(pack.name)
    package.__path__ = [str(pack)]
    sys.modules[pack.name] = package
    return importlib.import_module(f"{pack.name}.samplers"), importlib.import_module(f"{pack.name}.utils")


def run_original(comfy_samplers, samplers_mod, sampler: str, denoise, latent, sigmas, seed, options):
    """The original sampler as ComfyUI's KSAMPLER calls it (no mask), after manual_seed(seed)."""
    inner = types.SimpleNamespace()
    model_k = comfy_samplers.KSamplerX0Inpaint(
        lambda x, sigma, model_options=None, seed=None: denoise(x, sigma), sigmas
    )
    model_k.latent_image = latent
    model_k.noise = torch.zeros_like(latent)
    del inner
    extra_args = {"model_options": {}, "seed": seed, "denoise_mask": None}
    impl = samplers_mod.SAMPLERS_MAP[sampler]()
    torch.manual_seed(seed)
    return impl(model_k, latent.clone(), sigmas, extra_args=extra_args, disable=True, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=str(REFERENCE / "ComfyUI"))
    parser.add_argument("--mirror", default=str(REFERENCE / "ComfyUI-Iterative-Mixer"))
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import import_comfy  # noqa: E402  (ComfyUI imported as the tests import it)

    import_comfy(args.comfyui)
    import comfy.k_diffusion.sampling as kds
    import comfy.model_base as model_base
    import comfy.model_sampling as model_sampling
    import comfy.samplers as comfy_samplers

    records: list[dict] = []
    arrays: dict[str, np.ndarray] = {}

    def add(kind: str, record: dict, **arrs: torch.Tensor | np.ndarray) -> None:
        i = len(records)
        records.append({"kind": kind, "i": i, **record})
        for name, a in arrs.items():
            arrays[f"{kind}{i}_{name}"] = np.asarray(a.detach().numpy() if isinstance(a, torch.Tensor) else a)

    rng = np.random.default_rng(0)

    def karras(n: int, smin=0.03, smax=14.6, rho=7.0) -> torch.Tensor:
        if n == 1:
            return torch.tensor([smax, 0.0], dtype=torch.float32)
        ramp = torch.linspace(0, 1, n)
        s = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        return torch.cat([s, torch.zeros(1)]).float()

    # 1. ComfyUI's model sampling prediction classes, for every model type.
    types_ = ["EPS", "V_PREDICTION", "V_PREDICTION_EDM", "STABLE_CASCADE", "EDM", "FLOW",
              "V_PREDICTION_CONTINUOUS", "FLUX", "IMG_TO_IMG", "FLOW_COSMOS"]  # fmt: skip
    for model_type in types_:
        for settings in ({}, {"sigma_data": 0.5}):
            cfg = types.SimpleNamespace(sampling_settings=settings)
            ms = model_base.model_sampling(cfg, model_base.ModelType[model_type])
            lo, hi = float(ms.sigma_min), float(ms.sigma_max)
            sig = torch.tensor([hi, lo * 1.5 + 1e-3, (lo * hi) ** 0.5], dtype=torch.float32)
            x = torch.from_numpy(rng.standard_normal((3, 4, 5, 6)).astype(np.float32))
            out = torch.from_numpy(rng.standard_normal((3, 4, 5, 6)).astype(np.float32))
            add(
                "model",
                {"model_type": model_type, "settings": settings},
                sigma=sig, x=x, output=out,
                input=ms.calculate_input(sig, x),
                timestep=ms.timestep(sig).float(),
                denoised=ms.calculate_denoised(sig, out, x),
            )  # fmt: skip

    # 2. ComfyUI's own samplers with the toy denoisers.
    lcm_seed = 123
    for sampler in ("euler", "dpmpp_2m", "lcm"):
        for toy in ("gaussian", "nonlinear"):
            for steps in (1, 2, 7, 30):
                shape = (2, 4, 6, 5) if steps == 7 else (1, 3, 4, 4)
                mu = torch.from_numpy(rng.standard_normal(shape[1:]).astype(np.float32) * MU_SCALE)
                den = gaussian_denoiser(mu, 0.8) if toy == "gaussian" else nonlinear_denoiser(mu)
                sigmas = karras(steps)
                x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) * sigmas[0]
                model = lambda x, sigma, seed=None, model_options=None, den=den: den(x, sigma)  # noqa: E731
                model_k = types.SimpleNamespace(
                    inner_model=types.SimpleNamespace(
                        inner_model=types.SimpleNamespace(model_sampling=model_sampling.EPS())
                    )
                )
                wrapped = type("M", (), {"__call__": lambda self, x, s, model=model, **k: model(x, s, **k)})()
                wrapped.inner_model = model_k.inner_model
                extra = {"seed": lcm_seed} if sampler == "lcm" else {}
                fn = {"euler": kds.sample_euler, "dpmpp_2m": kds.sample_dpmpp_2m, "lcm": kds.sample_lcm}[
                    sampler
                ]
                out = fn(wrapped, x.clone(), sigmas, extra_args=extra, disable=True)
                noise = torch.zeros((steps, *shape))
                if sampler == "lcm":  # the draws sample_lcm makes, re-drawn from the same seed
                    g = torch.Generator().manual_seed(lcm_seed)
                    for i in range(steps):
                        if sigmas[i + 1] > 0:
                            noise[i] = torch.randn(shape, generator=g)
                add("sampler", {"sampler": sampler, "toy": toy, "steps": steps},
                    mu=mu, x=x, sigmas=sigmas, out=out, noise=noise)  # fmt: skip

    # 3. The original's mixing samplers, schedules and blends.
    with tempfile.TemporaryDirectory() as tmp:
        samplers_mod, utils_mod = import_original(extract_mirror(args.mirror, pathlib.Path(tmp)))
        del utils_mod

        # Schedules alone.
        for name in ("cosine", "linear", "logistic"):
            for steps in (1, 2, 3, 10, 17, 50):
                for alpha in (0.1, 1.0, 2.4, 10.0):
                    for start, stop, clamp in [(None, None, None), (0.2, 0.8, None), (0.0, 1.0, 1.0),
                                               (0.3, 0.7, 0.9), (None, 0.29, 0.5), (0.1, None, 0.7),
                                               (0.5, 1.5, 2.0), (None, 0.05, None)]:  # fmt: skip
                        for bmin, bmax in ((0.0, 1.0), (0.2, 0.9)):
                            start_step = 0 if start is None else int(start * steps)
                            stop_step = steps if stop is None else int(stop * steps)
                            try:
                                c1 = samplers_mod.get_blending_schedule(
                                    range(steps), name, blending_function="addition", alpha_1=alpha,
                                    clamp_blending_at_pct=clamp, start_blending_at_step=start_step,
                                    stop_blending_at_step=stop_step, blend_min=bmin, blend_max=bmax,
                                )  # fmt: skip
                                err = None
                            except Exception as e:  # the original raises for some settings
                                c1, err = torch.zeros(0), f"{type(e).__name__}: {e}"
                            add("schedule", {"name": name, "steps": steps, "alpha_1": alpha, "start": start,
                                             "stop": stop, "clamp": clamp, "blend_min": bmin,
                                             "blend_max": bmax, "error": err}, c1=c1)  # fmt: skip

        # Blending functions alone (per item of a batch of 1; the original is batch-1 only).
        for name in ("addition", "slerp", "norm_only"):
            for w in (0.0, 0.3, 0.97, 1.0):
                a = torch.from_numpy(rng.standard_normal((1, 4, 5, 5)).astype(np.float32))
                b = torch.from_numpy(rng.standard_normal((1, 4, 5, 5)).astype(np.float32))
                out = samplers_mod.get_blending_function(name)(a, b, torch.tensor(w, dtype=torch.float32))
                add("blend", {"name": name, "weight": w}, l1=a, l2=b, out=out)

        # Whole mixing paths.
        cases = []
        for sampler in ("euler", "dpmpp_2m"):
            for sched in ("cosine", "linear", "logistic"):
                for func in ("addition", "slerp", "norm_only"):
                    cases.append(dict(sampler=sampler, blending_schedule=sched, blending_function=func))
        extra_cases = [
            dict(sampler="euler", alpha_1=0.1, steps=1, blending_schedule="cosine"),
            dict(sampler="euler", alpha_1=10.0, steps=50),
            dict(sampler="dpmpp_2m", alpha_1=0.5, steps=50, blending_schedule="linear"),
            dict(sampler="euler", start_blending_at_pct=0.2, stop_blending_at_pct=0.7,
                 blending_schedule="linear"),
            dict(sampler="dpmpp_2m", start_blending_at_pct=0.1, stop_blending_at_pct=0.6,
                 clamp_blending_at_pct=0.8, blending_schedule="logistic", alpha_1=3.0),
            dict(sampler="euler", stop_blending_at_pct=0.5, clamp_blending_at_pct=0.9,
                 blending_schedule="cosine"),
            dict(sampler="dpmpp_2m", blend_min=0.1, blend_max=0.9, blending_function="slerp"),
            dict(sampler="euler", normalize_on_mean=True),
            dict(sampler="dpmpp_2m", steps=2, blending_schedule="linear"),
            dict(sampler="euler", steps=3, blending_schedule="logistic", blending_function="norm_only"),
            dict(sampler="lcm", steps=8),
            dict(sampler="lcm", steps=6, blending_schedule="linear", blending_function="slerp"),
            dict(sampler="euler", steps=12, rewind=True, rewind_min=0.5, rewind_max=0.8),
            dict(sampler="dpmpp_2m", steps=20, rewind=True, rewind_min=0.3, rewind_max=0.95,
                 blending_schedule="logistic"),
            dict(sampler="lcm", steps=10, rewind=True, rewind_min=0.5, rewind_max=0.9),
        ]  # fmt: skip
        cases += extra_cases
        for n, case in enumerate(cases):
            case = dict(case)
            steps = case.pop("steps", [5, 10, 25][n % 3])
            sampler = case.pop("sampler")
            options = {"alpha_1": 2.4, "blending_schedule": "cosine", "blending_function": "addition", **case}
            for toy in ("gaussian", "nonlinear"):
                if toy == "nonlinear" and n % 2 and n < len(cases) - len(extra_cases):
                    continue
                shape = (1, 4, 8, 8)
                mu = torch.from_numpy(rng.standard_normal(shape[1:]).astype(np.float32) * MU_SCALE)
                den = gaussian_denoiser(mu, 0.8) if toy == "gaussian" else nonlinear_denoiser(mu)
                sigmas = karras(steps)
                latent = torch.from_numpy(rng.standard_normal(shape).astype(np.float32) * 0.7)
                seed = 1000 + n
                # Every draw the original makes, in order, from one generator seeded as it is.
                draws = []
                real_randn, real_randn_like = torch.randn, torch.randn_like

                def randn(*a, real_randn=real_randn, draws=draws, **k):
                    out = real_randn(*a, **k)
                    draws.append(out.clone())
                    return out

                def randn_like(*a, real_randn_like=real_randn_like, draws=draws, **k):
                    out = real_randn_like(*a, **k)
                    draws.append(out.clone())
                    return out

                torch.randn, torch.randn_like = randn, randn_like
                try:
                    out = run_original(
                        comfy_samplers, samplers_mod, sampler, den, latent, sigmas, seed, options
                    )
                finally:
                    torch.randn, torch.randn_like = real_randn, real_randn_like
                noised = latent.repeat(len(sigmas), 1, 1, 1) + draws[0] * sigmas.view(-1, 1, 1, 1)
                add("mix", {"sampler": sampler, "toy": toy, "steps": steps, "seed": seed, "options": options,
                            "draws": len(draws)},
                    mu=mu, latent=latent, sigmas=sigmas, noised=noised, out=out,
                    **{f"draw{k}": d for k, d in enumerate(draws)})  # fmt: skip

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, index=np.asarray(json.dumps(records)), **arrays)
    print(f"wrote {OUT}: {len(records)} records, {sum(a.nbytes for a in arrays.values()) / 1e6:.1f} MB raw")


if __name__ == "__main__":
    main()
