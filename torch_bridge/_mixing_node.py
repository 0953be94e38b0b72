"""The ComfyUI nodes that mix: ComfyUI-Iterative-Mixer's samplers, working on today's ComfyUI.

- **Iterative Mixing KSampler Advanced (jax-unsampler)**: a noised batch in (Batch Unsampler's,
  Inverted Batch Unsampler's, or any LATENT batch of `n` steps of `B` latents); one step at a
  time it samples with ComfyUI's own KSampler (any ComfyUI sampler and scheduler, through the
  CFG guider: conditioning, cfg, model patches and wrappers apply) from step `i - 1` to step
  `i` of an `n`-step schedule, then blends the result with the batch's step `i` latents by the
  blending schedule, as the original's Iterative Mixing KSampler Advanced does.
- **Iterative Mixing KSampler (jax-unsampler)**: one node: the Batch Unsampler's batch of the
  latent (our node's rules), then the Advanced node's loop; the last step's latents out, as the
  original's Iterative Mixing KSampler (which fails on current ComfyUI).
- **Iterative Mixing Sampler (jax-unsampler)**: a SAMPLER for SamplerCustom and
  SamplerCustomAdvanced that mixes with any of ComfyUI's samplers that step along the sigmas
  (`MIXING_SAMPLERS`; the original's IterativeMixingSampler had euler, heun, dpmpp_2m and lcm),
  so any guider and any sigmas compose with it; it runs
  `torch_bridge.mixing_sample_torch` on ComfyUI's wrapped model.

The schedule and the blend are the package's (`jax_unsampler.blending_schedule`,
`jax_unsampler.blend`); nothing of the mixing arithmetic is written here.

Importing this module imports neither JAX nor ComfyUI nor matplotlib: each loads on first use.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from jax_unsampler._names import (
    BLENDING_FUNCTIONS,
    BLENDING_SCHEDULES,
    MIXING_SAMPLERS,
    MODES,
    SAMPLERS,
    SCHEDULERS,
    SEED_MAX,
)
from jax_unsampler._validation import check_choice, check_int

from ._cache import enable_node_compilation_cache
from ._comfy_model import model_sampling_from_comfy
from ._convert import to_jax, to_torch
from ._node import NOISE_SOURCES, _comfy_names, batch_unsample_comfy, sampler_and_scheduler_names
from ._node_inputs import CFG_MAX, check_cfg, check_finite, check_latent_image, node_message
from ._noise import check_seed

KSAMPLER_ID = "JaxUnsampler_IterativeMixingKSampler"
KSAMPLER_NAME = "Iterative Mixing KSampler (jax-unsampler)"
ADVANCED_ID = "JaxUnsampler_IterativeMixingKSamplerAdvanced"
ADVANCED_NAME = "Iterative Mixing KSampler Advanced (jax-unsampler)"
SAMPLER_ID = "JaxUnsampler_IterativeMixingSampler"
SAMPLER_NAME = "Iterative Mixing Sampler (jax-unsampler)"


_SAMPLING = "sampling/jax-unsampler"


# ---- Inputs ----------------------------------------------------------------------------------


def _float(fn: str, name: str, value: object, lo: float, hi: float) -> float:
    """`value` as a float: a real number (Python or NumPy, not bool) in `[lo, hi]`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not lo <= float(value) <= hi:  # type: ignore[arg-type]
        raise ValueError(f"{fn}: {name} must be a finite number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _bool(fn: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{fn}: {name} must be True or False, got {value!r}")
    return value


def mixing_settings(fn: str, **settings) -> dict[str, Any]:
    """The blending settings checked (the widgets' ranges), as the package's keywords."""
    out: dict[str, Any] = {
        "blending_schedule": check_choice(
            fn, "blending_schedule", settings["blending_schedule"], BLENDING_SCHEDULES
        ),
        "alpha_1": _float(fn, "alpha_1", settings["alpha_1"], 0.0, 100.0),
    }
    for name in ("start_blending_at_pct", "stop_blending_at_pct", "clamp_blending_at_pct"):
        out[name] = _float(fn, name, settings[name], 0.0, 1.0)
    for name in ("blend_min", "blend_max"):
        out[name] = _float(fn, name, settings[name], -10.0, 10.0)
    return out


def _blending_inputs(stop_default: float = 1.0) -> dict[str, tuple]:
    """The blending widgets, with the original's names, defaults and ranges."""
    pct = {"min": 0.0, "max": 1.0, "step": 0.01}
    return {
        "alpha_1": (
            "FLOAT",
            {
                "default": 2.4,
                "min": 0.05,
                "max": 100.0,
                "step": 0.05,
                "tooltip": "The cosine and logistic schedules' exponent: small mixes more of the batch in.",
            },
        ),  # fmt: skip
        "blending_schedule": (list(BLENDING_SCHEDULES), {"default": "cosine"}),
        "blending_function": (list(BLENDING_FUNCTIONS), {"default": "addition"}),
        "start_blending_at_pct": ("FLOAT", {"default": 0.0, **pct}),
        "stop_blending_at_pct": ("FLOAT", {"default": stop_default, **pct}),
        "clamp_blending_at_pct": ("FLOAT", {"default": 1.0, **pct}),
        "blend_min": ("FLOAT", {"default": 0.0, "min": -10.0, "max": 10.0, "step": 0.01}),
        "blend_max": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
    }


def _comfy():
    """ComfyUI's `comfy.sample` and `comfy.samplers` (the nodes run only inside ComfyUI)."""
    try:
        import comfy.sample
        import comfy.samplers
    except Exception as err:  # outside ComfyUI
        raise ValueError(f"needs ComfyUI (comfy.sample could not be imported: {err})") from None
    return comfy.sample, comfy.samplers


def _progress(total: int):
    try:
        import comfy.utils

        return comfy.utils.ProgressBar(total)
    except Exception:  # no progress bar outside a running ComfyUI
        return None


def _image_of(figure) -> torch.Tensor:
    from ._stats_node import _image_of as draw

    return draw(figure)


def require_matplotlib(fn: str) -> None:
    from ._stats_node import require_matplotlib as require

    require(fn)


def schedule_plot(c1: np.ndarray) -> torch.Tensor:
    """The blending schedule drawn as a ComfyUI IMAGE (the original's fourth output)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(len(c1)), c1, marker="o" if len(c1) <= 60 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("weight of the sampled latent (c1)")
    ax.set_title("Blending schedule")
    ax.grid(alpha=0.3)
    return _image_of(fig)


# ---- The per-step loop (Advanced and the one-node KSampler) ----------------------------------


def _step_noise(seed: int, noise_source: str, batch: torch.Tensor, batch_index) -> torch.Tensor:
    """Each step's fresh noise for ComfyUI's sampler: ComfyUI's own `prepare_noise` of the
    (flipped) batch with `seed`, as the original draws it (torch), or JAX normal noise."""
    if noise_source == "torch":
        sample, _ = _comfy()
        return sample.prepare_noise(batch, seed, batch_index)
    import jax

    from jax_unsampler import key_from_seed

    key = jax.random.fold_in(key_from_seed(seed), 1)  # apart from the Batch Unsampler's key
    return to_torch(jax.random.normal(key, tuple(batch.shape))).to(batch.dtype)


def iterative_mixing_ksampler_advanced_comfy(
    model,
    seed: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive,
    negative,
    latent_image_batch: dict[str, Any],
    denoise: float = 1.0,
    alpha_1: float = 2.4,
    reverse_input_batch: bool = True,
    blending_schedule: str = "cosine",
    stop_blending_at_pct: float = 1.0,
    clamp_blending_at_pct: float = 1.0,
    blending_function: str = "addition",
    start_blending_at_pct: float = 0.0,
    blend_min: float = 0.0,
    blend_max: float = 1.0,
    latents_per_step: int = 1,
    noise_source: str = "jax",
    *,
    fn: str = ADVANCED_ID,
    plot: bool = True,
) -> tuple[dict, dict, dict, torch.Tensor | None]:
    """What the Advanced node computes: `(mixed, noised, intermediate, schedule plot)`.

    The batch holds `n` steps of `B = latents_per_step` latents, step-major; with
    `reverse_input_batch` (the original's default) it is taken least noise first (as the
    unsampler nodes make it) and flipped, noisiest first. `z[0]` is its noisiest step; for
    `i = 0 .. n-1`, ComfyUI's KSampler of `n` steps (`sampler_name`, `scheduler`, `denoise`,
    cfg and conditioning) samples `z[i]` plus fresh noise from step `i - 1` to step `i`, and
    `z[i+1] = blend(batch step i, sample, c1[i])` with `c1 = blending_schedule(n)`.

    **Returns:** the `(n + 1) * B` mixed latents (first the noisiest input step), the (flipped)
    input batch, the `(n + 1) * B` samples before mixing (the first all zeros) and the schedule
    drawn as an IMAGE (None with `plot=False`: the one-node KSampler returns no plot, so it
    draws none and needs no matplotlib).
    """
    samples = check_latent_image(fn, latent_image_batch, name="latent_image_batch")
    check_finite(fn, "latent_image_batch", samples)
    seed = check_seed(fn, seed)
    cfg = check_cfg(fn, cfg)
    check_choice(fn, "sampler_name", sampler_name, [*SAMPLERS, *_comfy_names("SAMPLERS")])
    check_choice(fn, "scheduler", scheduler, [*SCHEDULERS, *_comfy_names("SCHEDULERS")])
    denoise = _float(fn, "denoise", denoise, 0.0, 1.0)
    reverse_input_batch = _bool(fn, "reverse_input_batch", reverse_input_batch)
    function = check_choice(fn, "blending_function", blending_function, BLENDING_FUNCTIONS)
    check_choice(fn, "noise_source", noise_source, NOISE_SOURCES)
    settings = mixing_settings(
        fn, alpha_1=alpha_1, blending_schedule=blending_schedule, start_blending_at_pct=start_blending_at_pct,
        stop_blending_at_pct=stop_blending_at_pct, clamp_blending_at_pct=clamp_blending_at_pct,
        blend_min=blend_min, blend_max=blend_max,
    )  # fmt: skip
    per_step = check_int(fn, "latents_per_step", latents_per_step, 1, samples.shape[0])
    if samples.shape[0] % per_step:
        raise ValueError(
            f"{fn}: latent_image_batch holds {samples.shape[0]} latents, not a whole number of steps of "
            f"latents_per_step={per_step}; set latents_per_step to the batch size the unsampler was given"
        )
    steps = samples.shape[0] // per_step
    if denoise == 0.0:
        raise ValueError(f"{fn}: denoise is 0, so there is no step to sample; set it above 0")
    if plot:
        require_matplotlib(fn)

    enable_node_compilation_cache()
    import jax_unsampler as ju

    sample, _ = _comfy()
    z = samples.detach().cpu().to(torch.float32)
    if reverse_input_batch:
        z = z.reshape(steps, per_step, *z.shape[1:]).flip(0).reshape(z.shape)
    index = latent_image_batch.get("batch_index")
    noise = _step_noise(seed, noise_source, z, index)
    mask = latent_image_batch.get("noise_mask")
    c1 = np.asarray(ju.blending_schedule(settings.pop("blending_schedule"), steps, **settings), np.float32)
    out = torch.zeros((steps + 1) * per_step, *z.shape[1:])
    before_mixing = torch.zeros_like(out)
    out[:per_step] = z[:per_step]
    bar = _progress(steps)
    for i in range(steps):
        rows = slice(i * per_step, (i + 1) * per_step)
        step_mask = mask[rows] if isinstance(mask, torch.Tensor) and mask.shape[0] == z.shape[0] else mask
        try:
            sampled = sample.sample(
                model, noise[rows], steps, cfg, sampler_name, scheduler, positive, negative, out[rows],
                denoise=denoise, disable_noise=False, start_step=i - 1, last_step=i, force_full_denoise=False,
                noise_mask=step_mask, disable_pbar=True, seed=seed,
            )  # fmt: skip
        except ValueError as e:
            raise ValueError(node_message(fn, e)) from None
        sampled = sampled.detach().cpu().to(torch.float32)
        if not bool(torch.isfinite(sampled).all()):
            raise ValueError(
                f"{fn}: the model's output at step {i + 1} of {steps} ({sampler_name}, {scheduler}) holds "
                "NaN or infinite values: the model diverged there, so the latent cannot be blended (its "
                "input was finite). Try another sampler or scheduler, more steps, a lower cfg, or a later "
                "stop_blending_at_pct (blending less of the batch into the late steps)"
            )
        before_mixing[(i + 1) * per_step : (i + 2) * per_step] = sampled
        mixed = ju.blend(function, to_jax(z[rows].contiguous()), to_jax(sampled.contiguous()), c1[i])
        out[(i + 1) * per_step : (i + 2) * per_step] = to_torch(mixed)
        if bar is not None:
            bar.update_absolute(i + 1, steps)

    def latent(tensor: torch.Tensor) -> dict:
        kept = {
            k: v for k, v in latent_image_batch.items() if k not in ("samples", "noise_mask", "batch_index")
        }
        return {**kept, "samples": tensor.to(samples.dtype)}

    return latent(out), latent(z), latent(before_mixing), schedule_plot(c1) if plot else None


def iterative_mixing_ksampler_comfy(
    model,
    positive,
    negative,
    latent_image: dict[str, Any],
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float = 1.0,
    alpha_1: float = 2.4,
    blending_schedule: str = "cosine",
    blending_function: str = "addition",
    normalize_on_mean: bool = False,
    start_blending_at_pct: float = 0.0,
    stop_blending_at_pct: float = 1.0,
    clamp_blending_at_pct: float = 1.0,
    blend_min: float = 0.0,
    blend_max: float = 1.0,
    noise_source: str = "jax",
    mode: str = "node",
) -> dict[str, Any]:
    """What the one-node Iterative Mixing KSampler computes: the Batch Unsampler's batch of
    `latent_image` (`steps` steps of its `B` latents, `normalize = normalize_on_mean`, `seed`,
    `noise_source`, `mode`), then `iterative_mixing_ksampler_advanced_comfy` on it; returns
    the LATENT of the last step's `B` latents, as the original's Iterative Mixing KSampler."""
    fn = KSAMPLER_ID
    samples = check_latent_image(fn, latent_image)
    check_finite(fn, "latent_image", samples)
    steps = check_int(fn, "steps", steps, 1, 10000)
    _bool(fn, "normalize_on_mean", normalize_on_mean)
    check_choice(fn, "noise_source", noise_source, NOISE_SOURCES)
    check_choice(fn, "mode", mode, MODES)
    # The mixing settings are checked before the unsampler runs.
    check_seed(fn, seed)
    check_cfg(fn, cfg)
    _float(fn, "denoise", denoise, 0.0, 1.0)
    check_choice(fn, "blending_function", blending_function, BLENDING_FUNCTIONS)
    mixing_settings(
        fn, alpha_1=alpha_1, blending_schedule=blending_schedule, start_blending_at_pct=start_blending_at_pct,
        stop_blending_at_pct=stop_blending_at_pct, clamp_blending_at_pct=clamp_blending_at_pct,
        blend_min=blend_min, blend_max=blend_max,
    )  # fmt: skip
    try:
        batch = batch_unsample_comfy(
            model, sampler_name, scheduler, steps, 0, steps, latent_image, normalize_on_mean, seed=seed,
            noise_source=noise_source, mode=mode,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(node_message(fn, e)) from None
    # The batch_index named each latent's noise stream in the unsampler (jax noise); the steps'
    # noise is drawn as the original draws it for the batch it made (no batch_index).
    batch = {k: v for k, v in batch.items() if k != "batch_index"}
    mixed, _, _, _ = iterative_mixing_ksampler_advanced_comfy(
        model, seed, cfg, sampler_name, scheduler, positive, negative, batch, denoise=denoise,
        alpha_1=alpha_1, reverse_input_batch=True, blending_schedule=blending_schedule,
        stop_blending_at_pct=stop_blending_at_pct,
        clamp_blending_at_pct=clamp_blending_at_pct, blending_function=blending_function,
        start_blending_at_pct=start_blending_at_pct, blend_min=blend_min, blend_max=blend_max,
        latents_per_step=samples.shape[0], noise_source=noise_source, fn=fn, plot=False,
    )  # fmt: skip
    last = mixed["samples"][-samples.shape[0] :]
    kept = {k: v for k, v in latent_image.items() if k != "samples"}
    return {**kept, "samples": last.to(samples.dtype)}


# ---- The SAMPLER -----------------------------------------------------------------------------


class GuidedModel:
    """ComfyUI's wrapped model as the samplers' denoiser: `model(x, sigma, **extra_args)`, and
    for the CFG++ samplers (`with_uncond`) the guided and the unconditional predictions of one
    evaluation, the latter read where ComfyUI's own CFG++ samplers read it (a post-CFG hook, with
    cfg 1's shortcut off so that it is computed)."""

    def __init__(self, model: Any, extra_args: dict) -> None:
        self.model, self.extra_args = model, extra_args

    def __call__(self, latent: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(latent, sigma, **self.extra_args)

    def with_uncond(self, latent: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import comfy.model_patcher

        seen: dict[str, torch.Tensor] = {}

        def hook(args: dict) -> torch.Tensor:
            seen["uncond"] = args["uncond_denoised"]
            return args["denoised"]

        options = comfy.model_patcher.set_model_options_post_cfg_function(
            dict(self.extra_args.get("model_options", {})), hook, disable_cfg1_optimization=True
        )
        denoised = self.model(latent, sigma, **{**self.extra_args, "model_options": options})
        return denoised, seen["uncond"]


def sampler_model_sampling(model: Any) -> Any:
    """The `ModelSampling` of the wrapped model ComfyUI hands a sampler function, found where
    ComfyUI's own samplers look (`model.inner_model.model_patcher`), or None where it is not
    there (then the samplers that need it say so): its noise scaling and what the samplers
    read of it (a flow model's first sigma, sa_solver's tau interval)."""
    patcher = getattr(getattr(model, "inner_model", None), "model_patcher", None)
    return None if patcher is None else model_sampling_from_comfy(patcher)


def mixing_sampler_function(
    model, x, sigmas, extra_args=None, callback=None, disable=None, *, sampler: str = "euler", **settings
):
    """The sampler function the SAMPLER hands ComfyUI (`KSAMPLER`): ComfyUI calls it as its
    k-diffusion samplers, with its wrapped model, the starting latent `x` and the sigmas; it
    runs `torch_bridge.mixing_sample_torch` with `denoiser(x, s) = model(x, s, **extra_args)`
    and the seed ComfyUI passes (SamplerCustom's noise_seed)."""
    from ._mixing import mixing_sample_torch

    enable_node_compilation_cache()
    extra_args = {} if extra_args is None else extra_args
    if extra_args.get("denoise_mask") is not None:
        raise ValueError(
            f"{SAMPLER_ID}: a LATENT with a noise_mask is not supported by the mixing sampler; "
            "remove the mask (SetLatentNoiseMask) or use Iterative Mixing KSampler Advanced"
        )

    denoiser = GuidedModel(model, extra_args)

    def on_step(i, denoised, latent, total):
        if callback is not None:
            sigma = sigmas[min(i, len(sigmas) - 1)]  # a rewind pass counts on past the sigmas
            callback({"x": latent, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})

    seed = int(extra_args.get("seed") or 0)
    try:
        with torch.no_grad():
            return mixing_sample_torch(
                denoiser, x, sigmas, seed=seed, sampler=sampler, callback=on_step,
                model_sampling=sampler_model_sampling(model), **settings,
            )  # fmt: skip
    except ValueError as e:
        raise ValueError(node_message(SAMPLER_ID, e)) from None


def iterative_mixing_sampler_comfy(
    sampler: str = "euler",
    alpha_1: float = 2.4,
    blending_schedule: str = "cosine",
    blending_function: str = "addition",
    normalize_on_mean: bool = False,
    start_blending_at_pct: float = 0.0,
    stop_blending_at_pct: float = 1.0,
    clamp_blending_at_pct: float = 1.0,
    blend_min: float = 0.0,
    blend_max: float = 1.0,
    rewind: bool = False,
    rewind_min: float = 0.5,
    rewind_max: float = 0.8,
):
    """The SAMPLER: ComfyUI's `KSAMPLER` around `mixing_sampler_function` with these settings."""
    fn = SAMPLER_ID
    sampler = check_choice(fn, "sampler", sampler, MIXING_SAMPLERS)
    settings = mixing_settings(
        fn, alpha_1=alpha_1, blending_schedule=blending_schedule, start_blending_at_pct=start_blending_at_pct,
        stop_blending_at_pct=stop_blending_at_pct, clamp_blending_at_pct=clamp_blending_at_pct,
        blend_min=blend_min, blend_max=blend_max,
    )  # fmt: skip
    settings["blending_function"] = check_choice(
        fn, "blending_function", blending_function, BLENDING_FUNCTIONS
    )
    settings["normalize_on_mean"] = _bool(fn, "normalize_on_mean", normalize_on_mean)
    settings["rewind"] = _bool(fn, "rewind", rewind)
    settings["rewind_min"] = _float(fn, "rewind_min", rewind_min, 0.0, 0.999)
    settings["rewind_max"] = _float(fn, "rewind_max", rewind_max, 0.0, 0.999)
    if settings["rewind"] and not settings["rewind_min"] < settings["rewind_max"]:
        raise ValueError(
            f"{fn}: rewind_min ({rewind_min}) must be below rewind_max ({rewind_max}) when rewind is on"
        )
    _, samplers = _comfy()
    return samplers.KSAMPLER(mixing_sampler_function, extra_options={"sampler": sampler, **settings})


# ---- The V1 nodes ----------------------------------------------------------------------------


def _seed_input() -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True})


def _cfg_input() -> tuple:
    return ("FLOAT", {"default": 8.0, "min": 0.0, "max": CFG_MAX, "step": 0.1, "round": 0.01})


def _denoise_input() -> tuple:
    return ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})


_NOISE_SOURCE_TOOLTIP = (
    "jax: keyed JAX noise. torch: the original's noise (torch generators seeded with seed)."
)


class IterativeMixingKSamplerAdvancedJax:
    """ComfyUI node: the original's Iterative Mixing KSampler Advanced on a noised batch."""

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = sampler_and_scheduler_names()
        blending = _blending_inputs()
        return {
            "required": {
                "model": ("MODEL",),
                "seed": _seed_input(),
                "cfg": _cfg_input(),
                "sampler_name": (samplers,),
                "scheduler": (schedulers,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image_batch": ("LATENT", {"tooltip": "n steps of B latents, least noise first."}),
                "denoise": _denoise_input(),
                "alpha_1": blending["alpha_1"],
                "reverse_input_batch": ("BOOLEAN", {"default": True}),
                "blending_schedule": blending["blending_schedule"],
                "stop_blending_at_pct": blending["stop_blending_at_pct"],
                "clamp_blending_at_pct": blending["clamp_blending_at_pct"],
                "blending_function": blending["blending_function"],
            },
            "optional": {
                "start_blending_at_pct": blending["start_blending_at_pct"],
                "blend_min": blending["blend_min"],
                "blend_max": blending["blend_max"],
                "latents_per_step": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 4096,
                        "tooltip": "B: the batch size of the latent the unsampler was given.",
                    },
                ),  # fmt: skip
                "noise_source": (list(NOISE_SOURCES), {"default": "jax", "tooltip": _NOISE_SOURCE_TOOLTIP}),
            },
        }

    RETURN_TYPES = ("LATENT", "LATENT", "LATENT", "IMAGE")
    RETURN_NAMES = ("mixed_latents", "noised_latents", "intermediate_latents", "plot_image")
    FUNCTION = "sample"
    CATEGORY = _SAMPLING
    DESCRIPTION = (
        "Denoises a noised latent batch one step at a time with ComfyUI's KSampler, blending each "
        "step's result with the batch's latent of that step (ComfyUI-Iterative-Mixer's Iterative "
        "Mixing KSampler Advanced)."
    )

    def sample(self, **inputs):
        return iterative_mixing_ksampler_advanced_comfy(**inputs)


class IterativeMixingKSamplerJax:
    """ComfyUI node: unsample and mix in one (the original's Iterative Mixing KSampler)."""

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = sampler_and_scheduler_names()
        blending = _blending_inputs()
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "seed": _seed_input(),
                "steps": ("INT", {"default": 40, "min": 1, "max": 10000}),
                "cfg": _cfg_input(),
                "sampler_name": (samplers,),
                "scheduler": (schedulers,),
                "denoise": _denoise_input(),
                "alpha_1": blending["alpha_1"],
                "blending_schedule": blending["blending_schedule"],
                "blending_function": blending["blending_function"],
                "normalize_on_mean": ("BOOLEAN", {"default": False}),
            },
            "optional": {
                **{
                    k: blending[k]
                    for k in (
                        "start_blending_at_pct",
                        "stop_blending_at_pct",
                        "clamp_blending_at_pct",
                        "blend_min",
                        "blend_max",
                    )
                },
                "noise_source": (list(NOISE_SOURCES), {"default": "jax", "tooltip": _NOISE_SOURCE_TOOLTIP}),
                "mode": (list(MODES), {"default": "node", "tooltip": "The Batch Unsampler's mode."}),
            },  # fmt: skip
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "sample"
    CATEGORY = _SAMPLING
    DESCRIPTION = (
        "Unsamples the latent with Batch Unsampler's rules, then denoises it step by step, "
        "blending in the noised latent of each step (ComfyUI-Iterative-Mixer's Iterative Mixing "
        "KSampler): an img2img refinement that stays close to the input's layout."
    )

    def sample(self, **inputs):
        return (iterative_mixing_ksampler_comfy(**inputs),)


class IterativeMixingSamplerJax:
    """ComfyUI node: a SAMPLER that mixes (the original's IterativeMixingSampler)."""

    @classmethod
    def INPUT_TYPES(cls):
        blending = _blending_inputs()
        return {
            "required": {
                "sampler": (list(MIXING_SAMPLERS), {"default": "euler"}),
                "alpha_1": blending["alpha_1"],
                "blending_schedule": blending["blending_schedule"],
                "blending_function": blending["blending_function"],
                "normalize_on_mean": ("BOOLEAN", {"default": False}),
                **{
                    k: blending[k]
                    for k in (
                        "start_blending_at_pct",
                        "stop_blending_at_pct",
                        "clamp_blending_at_pct",
                        "blend_min",
                        "blend_max",
                    )
                },
                "rewind": ("BOOLEAN", {"default": False}),
                "rewind_min": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01}),
                "rewind_max": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01}),
            },  # fmt: skip
        }

    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("mixing_sampler",)  # not "sampler": V3 ids of inputs and outputs differ
    FUNCTION = "get_sampler"
    CATEGORY = "sampling/custom_sampling/samplers"
    DESCRIPTION = (
        "A SAMPLER for SamplerCustom / SamplerCustomAdvanced that unsamples the starting latent "
        "along the sigmas and blends it in at every step of the sampler's loop, any of ComfyUI's "
        "samplers that step along the sigmas (ComfyUI-Iterative-Mixer's IterativeMixingSampler "
        "had euler, heun, dpmpp_2m and lcm); the noise seed is the sampler node's."
    )

    def get_sampler(self, **inputs):
        return (iterative_mixing_sampler_comfy(**inputs),)


NODE_CLASS_MAPPINGS = {
    KSAMPLER_ID: IterativeMixingKSamplerJax,
    ADVANCED_ID: IterativeMixingKSamplerAdvancedJax,
    SAMPLER_ID: IterativeMixingSamplerJax,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    KSAMPLER_ID: KSAMPLER_NAME,
    ADVANCED_ID: ADVANCED_NAME,
    SAMPLER_ID: SAMPLER_NAME,
}
