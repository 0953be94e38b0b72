"""The ComfyUI node "Inverted Batch Unsampler": the BatchUnsampler's batch, made with the model.

Instead of `x + sigma * eps`, each entry is the state of the probability-flow ODE that the
model's own denoiser defines, carried from the latent up the node's sigmas
(`inverted_latents_torch`, the recurrence of `jax_unsampler.inverted_latents`). The model is
called the way ComfyUI's samplers call it: a `CFGGuider` with the positive and negative
conditioning and cfg runs a sampler object of ours, which gets ComfyUI's wrapped model
(conditioning, cfg, model patches and wrappers all applied) and steps the ODE with it.

Importing this module imports neither JAX nor ComfyUI: both load when the node first runs.
"""

from __future__ import annotations

from typing import Any

import torch

from jax_unsampler._names import INVERSION_SOLVERS, SAMPLERS, SCHEDULERS
from jax_unsampler._validation import check_choice

from ._comfy_model import model_sampling_from_comfy
from ._convert import latent_with_samples
from ._inversion import inverted_latents_torch
from ._node import BatchUnsamplerJax, _comfy_names, node_sigmas
from ._node_inputs import CFG_MAX, check_cfg, check_finite, check_latent_image, check_window, node_message

INVERSION_NODE_ID = "JaxUnsampler_InvertedBatchUnsampler"
"""The Inverted Batch Unsampler's node id (a key of `NODE_CLASS_MAPPINGS`)."""
INVERSION_DISPLAY_NAME = "Inverted Batch Unsampler (jax-unsampler)"

_CFG_TOOLTIP = (
    "Classifier-free guidance scale. Inversion is known to hold only at 1.0 (the model's own "
    "denoiser); above 1 the trajectory no longer samples back to the latent exactly."
)


def _comfy():
    """ComfyUI's samplers module: needed to run the node (it calls the model through it)."""
    try:
        import comfy.samplers
    except Exception as err:  # outside ComfyUI
        raise ValueError(
            f"{INVERSION_NODE_ID}: needs ComfyUI (comfy.samplers could not be imported: {err})"
        ) from None
    return comfy.samplers


def _trajectory_sampler(base: type, solver: str, latent: torch.Tensor) -> Any:
    """A ComfyUI sampler object that inverts instead of sampling, keeping every state.

    `CFGGuider.sample` hands it ComfyUI's wrapped model; it calls that model as ComfyUI's
    k-diffusion samplers do, `model(x, sigma * ones(B), **extra_args)`, so conditioning, cfg
    and the model's patches apply. It starts from its own `latent` mapped into the model's
    space with the model's `process_latent_in` (ComfyUI leaves an all-zero latent unmapped).
    """

    class TrajectorySampler(base):
        trajectory: torch.Tensor | None = None

        def sample(
            self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
            disable_pbar=False,
        ):  # fmt: skip
            samplers = _comfy()
            extra_args["denoise_mask"] = None
            model_k = samplers.KSamplerX0Inpaint(model_wrap, sigmas)
            model_k.latent_image = latent_image
            model_k.noise = noise
            inner = model_wrap.inner_model
            device = noise.device

            def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
                return model_k(x, sigma.to(x.device), **extra_args)

            def on_step(done: int, total: int) -> None:
                if callback is not None:
                    callback(done - 1, None, None, total)

            with torch.no_grad():  # ComfyUI runs nodes without autograd; so does this, anywhere
                self.trajectory = inverted_latents_torch(
                    denoiser, latent.to(device), sigmas, sampler=solver,
                    process_in=inner.process_latent_in, process_out=inner.process_latent_out, on_step=on_step,
                )  # fmt: skip
            # The guider maps this back out of the model's space; the node reads `trajectory`.
            return inner.process_latent_in(latent.to(device, torch.float32))

    return TrajectorySampler()


def _progress_callback(total: int):
    try:
        import comfy.utils

        bar = comfy.utils.ProgressBar(total)
    except Exception:  # no progress bar outside a running ComfyUI
        return None
    return lambda step, _x0, _x, steps: bar.update_absolute(step + 1, steps)


def inverted_batch_unsample_comfy(
    model,
    positive,
    negative,
    sampler_name: str,
    scheduler: str,
    steps: int,
    start_at_step: int,
    end_at_step: int,
    latent_image: dict[str, Any],
    normalize: bool = False,
    cfg: float = 1.0,
    solver: str = "euler",
) -> dict[str, Any]:
    """What the Inverted Batch Unsampler node computes, as a function.

    The node's sigmas are the BatchUnsampler's in `mode="model"`: KSampler's for the model,
    `sampler_name`, `scheduler` and `steps`, sliced to `[start_at_step, end_at_step)` and
    flipped (ascending), not divided by the latent scale factor. The batch holds the ODE state
    at each of them, least noise first, entry 0 the latent itself, returned as LATENTs.

    **Arguments:**

    - `model`: a ComfyUI MODEL (a ModelPatcher).
    - `positive`, `negative`: CONDITIONING, as for KSampler (`negative` is only used at cfg != 1).
    - `sampler_name`, `scheduler`, `steps`, `start_at_step`, `end_at_step`: pick the sigmas.
      `sampler_name` only decides the schedule (as on the BatchUnsampler); the ODE is
      always stepped with `solver`.
    - `latent_image`: a LATENT dict (any batch size and rank). Its `noise_mask` is carried
      into the output (expanded), not used: the whole latent is inverted.
    - `normalize`: subtract the mean of the batch's first entry from every entry (the
      BatchUnsampler's `normalize`).
    - `cfg`: classifier-free guidance scale (1.0: the only value at which inversion holds).
    - `solver`: one of `INVERSION_SAMPLERS`, ComfyUI's deterministic samplers that step along
      the sigmas (the docs' samplers table gives each one's model calls a step and order).

    **Returns:** the LATENT dict of the `n * B` latents, step-major, least noise first.
    """
    fn = INVERSION_NODE_ID
    samples = check_latent_image(fn, latent_image)
    check_finite(fn, "latent_image", samples)  # before the model runs on every step
    check_choice(fn, "sampler_name", sampler_name, [*SAMPLERS, *_comfy_names("SAMPLERS")])
    check_choice(fn, "scheduler", scheduler, [*SCHEDULERS, *_comfy_names("SCHEDULERS")])
    # As the Batch Unsampler: a window of no steps would give an empty LATENT; refuse it.
    steps, start_at_step, end_at_step = check_window(fn, steps, start_at_step, end_at_step)
    solver = check_choice(fn, "solver", solver, INVERSION_SOLVERS)
    if not isinstance(normalize, bool):
        raise ValueError(f"{fn}: normalize must be True or False, got {normalize!r}")
    cfg = check_cfg(fn, cfg, "1.0 for an exact inversion")
    try:
        ms = model_sampling_from_comfy(model)
    except ValueError as e:
        raise ValueError(node_message(fn, e, "model")) from None
    try:
        sigmas = node_sigmas(fn, model, ms, sampler_name, scheduler, steps, start_at_step, end_at_step, 1.0)
    except ValueError as e:
        raise ValueError(node_message(fn, e)) from None
    sigmas = torch.tensor(sigmas.tolist(), dtype=torch.float32)
    if sigmas.shape[0] == 0:  # schedules such as beta or ddim_uniform can be shorter than steps
        raise ValueError(
            f"{fn}: start_at_step ({start_at_step}) is past the end of the {scheduler} schedule for "
            f"{steps} steps; lower start_at_step"
        )
    if sigmas.shape[0] == 1:  # one entry, the latent itself: no step to take, no model to load
        z = samples.detach().cpu()
    else:
        samplers = _comfy()
        sampler = _trajectory_sampler(samplers.Sampler, solver, samples.detach().cpu())
        guider = samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(float(cfg))
        zeros = torch.zeros_like(samples, dtype=torch.float32, device="cpu")
        guider.sample(
            zeros, samples.detach().cpu().to(torch.float32), sampler, sigmas,
            callback=_progress_callback(sigmas.shape[0] - 1), disable_pbar=True, seed=0,
        )  # fmt: skip
        z = sampler.trajectory
    if normalize and z.shape[0]:
        z = z - z[0].to(torch.float32).mean().to(z.dtype)
    return latent_with_samples(latent_image, z.to(samples.device))


class InvertedBatchUnsamplerJax:
    """ComfyUI node: the BatchUnsampler's inputs plus conditioning, cfg and solver; the batch of
    an ODE inversion with the model instead of noise (see `inverted_batch_unsample_comfy`)."""

    @classmethod
    def INPUT_TYPES(cls):
        base = BatchUnsamplerJax.INPUT_TYPES()["required"]
        required = {
            "model": base["model"],
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            **{k: v for k, v in base.items() if k != "model"},
        }
        # Every step calls the model: the BatchUnsampler's default of 10000 steps would be hours.
        required["steps"] = (required["steps"][0], {**required["steps"][1], "default": 20})
        return {
            "required": required,
            "optional": {
                "cfg": (
                    "FLOAT",
                    {"default": 1.0, "min": 0.0, "max": CFG_MAX, "step": 0.1, "tooltip": _CFG_TOOLTIP},
                ),
                "solver": (
                    list(INVERSION_SOLVERS),
                    {
                        "default": "euler",
                        "tooltip": "ODE solver: euler (one model call a step), heun (two) or "
                        "dpmpp_2m (one, second order).",
                    },
                ),
            },
        }

    # One LATENT out, like the Batch Unsampler, under the same name and category.
    RETURN_TYPES = BatchUnsamplerJax.RETURN_TYPES
    RETURN_NAMES = BatchUnsamplerJax.RETURN_NAMES
    FUNCTION = BatchUnsamplerJax.FUNCTION
    CATEGORY = BatchUnsamplerJax.CATEGORY
    DESCRIPTION = (
        "The latent carried up the model's sigma schedule by inverting the sampler's ODE with the "
        "model, one batch entry per step, least noise first (the model-consistent counterpart of "
        "Batch Unsampler's noised batch)."
    )

    def unsample(self, **inputs):
        return (inverted_batch_unsample_comfy(**inputs),)
