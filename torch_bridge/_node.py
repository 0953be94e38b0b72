"""The ComfyUI node: BatchUnsampler's inputs and output, computed with jax_unsampler.

Importing this module imports torch but not JAX: JAX is imported the first time the node runs,
so a broken JAX install shows up as an error of this node, not as a ComfyUI that fails to
start. Reading the node mappings (`torch_bridge.NODE_CLASS_MAPPINGS`, ComfyUI's loading path)
defaults `XLA_PYTHON_CLIENT_PREALLOCATE` to `false` before that import, so JAX takes GPU memory
as it needs it instead of reserving most of the GPU that torch's models need; importing the
package alone leaves the environment as it is.
"""

from __future__ import annotations

from typing import Any  # noqa: E402

# The core's name tables and checks: plain Python, so the node still loads without JAX.
from jax_unsampler._names import (  # noqa: E402
    COUPLINGS,
    DISCARD_PENULTIMATE_SAMPLERS,
    MAX_STEPS,
    MODES,
    SAMPLERS,
    SCHEDULERS,
    SEED_MAX,
)
from jax_unsampler._validation import check_choice, check_int  # noqa: E402

from ._cache import enable_node_compilation_cache  # noqa: E402
from ._comfy_model import (  # noqa: E402
    check_latent_fits_model,
    comfy_model_object,
    latent_format_from_comfy,
    latent_scale_factor,
    model_sampling_from_comfy,
)
from ._convert import latent_with_samples, to_jax  # noqa: E402
from ._node_inputs import batch_index_ids, check_latent_image, check_window, node_message  # noqa: E402
from ._noise import check_seed, noised_latents_torch  # noqa: E402

NODE_ID = "JaxUnsampler_BatchUnsampler"
"""The node's id: prefixed, so it neither overrides nor is overridden by the original's."""

DISPLAY_NAME = "Batch Unsampler (jax-unsampler)"

NOISE_SOURCES = ("jax", "torch")
"""Where the node's noise comes from: JAX keys, or torch's CPU generator as the original."""


def _comfy_samplers():
    """ComfyUI's `comfy.samplers` module where it can be imported (inside ComfyUI), else None."""
    try:
        import comfy.samplers
    except Exception:  # outside ComfyUI, or a ComfyUI too broken to matter here
        return None
    return comfy.samplers


def sampler_and_scheduler_names() -> tuple[list[str], list[str]]:
    """The sampler and scheduler choices: ComfyUI's own lists where ComfyUI is importable,
    otherwise the ones jax_unsampler implements (the same names, without importing JAX)."""
    ksampler: Any = getattr(_comfy_samplers(), "KSampler", None)
    try:
        return list(ksampler.SAMPLERS), list(ksampler.SCHEDULERS)
    except (AttributeError, TypeError):
        return list(SAMPLERS), list(SCHEDULERS)


def _jax_key(seed: int):
    """The JAX key of a 64-bit seed, as the command makes it (`jax_unsampler.key_from_seed`)."""
    from jax_unsampler import key_from_seed

    return key_from_seed(seed)


def _full_sigmas_from_comfy(fn: str, model, sampler_name: str, scheduler: str, steps: int):
    """KSampler's sigmas computed by ComfyUI itself, for a scheduler jax_unsampler lacks."""
    import numpy as np

    samplers = _comfy_samplers()
    calculate = getattr(samplers, "calculate_sigmas", None)
    if calculate is None:
        raise ValueError(f"{fn}: unknown scheduler {scheduler!r}; valid choices: {', '.join(SCHEDULERS)}")
    discard = _discard_penultimate(sampler_name)
    ms = comfy_model_object(model, "model_sampling", fn=fn)
    full = calculate(ms, scheduler, steps + 1 if discard else steps)
    full = np.asarray(full.detach().cpu().float().numpy() if hasattr(full, "detach") else full, np.float32)
    if discard:
        full = np.concatenate([full[:-2], full[-1:]])
    return full


def _comfy_names(attr: str) -> tuple:
    """ComfyUI's own `KSampler.SAMPLERS` / `KSampler.SCHEDULERS` inside ComfyUI, else nothing."""
    ksampler = getattr(_comfy_samplers(), "KSampler", None)
    return tuple(name for name in getattr(ksampler, attr, ()) if isinstance(name, str))


def _discard_penultimate(sampler_name: str) -> bool:
    ksampler = getattr(_comfy_samplers(), "KSampler", None)
    names = getattr(ksampler, "DISCARD_PENULTIMATE_SIGMA_SAMPLERS", DISCARD_PENULTIMATE_SAMPLERS)
    return sampler_name in names


def node_sigmas(fn: str, model, ms, sampler_name, scheduler, steps, start_at_step, end_at_step, divisor):
    """The node's sliced, divided and flipped sigmas.

    Names jax_unsampler implements go to `jax_unsampler.unsampler_sigmas`. Inside a ComfyUI
    that offers more, a sampler it lacks is treated as ComfyUI's KSampler treats it (only
    whether it drops the penultimate sigma matters), and a scheduler it lacks is computed by
    ComfyUI's own `calculate_sigmas` on the model's sampling object.
    """
    import jax.numpy as jnp

    import jax_unsampler as ju

    if sampler_name not in SAMPLERS and sampler_name in _comfy_names("SAMPLERS"):
        sampler_name = "dpm_2" if _discard_penultimate(sampler_name) else "euler"
    if scheduler in SCHEDULERS or scheduler not in _comfy_names("SCHEDULERS"):
        # Ours, or a name neither knows: unsampler_sigmas raises the clear error for the latter.
        return ju.unsampler_sigmas(
            ms, sampler_name, scheduler, steps, start_at_step, end_at_step, latent_scale_factor=divisor
        )
    for what, value in (("steps", steps), ("start_at_step", start_at_step), ("end_at_step", end_at_step)):
        check_int(fn, what, value, 0, MAX_STEPS)
    full = _full_sigmas_from_comfy(fn, model, sampler_name, scheduler, steps)
    end = min(steps, end_at_step)
    start = min(start_at_step, end)
    return (jnp.asarray(full[start:end], jnp.float32) / jnp.float32(divisor))[::-1]


def read_model(fn: str, model, mode: str):
    """`(model sampling, sigma divisor, latent format or None)` of a MODEL for a `mode`, with
    errors naming the node's `model` input."""
    try:
        ms = model_sampling_from_comfy(model)
        if mode == "node":
            return ms, latent_scale_factor(model), None
        return ms, 1.0, latent_format_from_comfy(model)
    except ValueError as e:
        raise ValueError(node_message(fn, e, "model")) from None


def batch_unsample_comfy(
    model,
    sampler_name: str,
    scheduler: str,
    steps: int,
    start_at_step: int,
    end_at_step: int,
    latent_image: dict[str, Any],
    normalize: bool = False,
    seed: int = 0,
    noise_source: str = "jax",
    mode: str = "node",
    coupling: str = "independent",
) -> dict[str, Any]:
    """What the node computes, as a function: a ComfyUI MODEL and LATENT in, a LATENT out.

    **Arguments:**

    - `model`: a ComfyUI MODEL (current or older ModelPatcher, or a bare model).
    - `sampler_name`, `scheduler`, `steps`, `start_at_step`, `end_at_step`, `normalize`: the
      original node's inputs, with its meaning.
    - `latent_image`: a LATENT dict; `samples` of any batch size and rank (4-D images, 5-D
      video, 3-D audio), float32, float16 or bfloat16.
    - `seed`: 0 to 2**64 - 1.
    - `noise_source`: `"jax"` (noise from `jax.random.key(seed)`, per step and item; the
      LATENT's `batch_index`, if any, names each item's noise stream) or `"torch"` (the
      original's noise: torch's CPU generator seeded with `seed`, bit for bit).
    - `mode`: `"node"` (the original: sigmas divided by the latent scale factor, `x + s*eps`)
      or `"model"` (the model's own sigmas and noise scaling in its latent format's space).
    - `coupling`: `"independent"` (the original), `"shared"` or `"markov"`.

    **Returns:** the LATENT dict of the `n * B` noised latents, step-major, least noise first,
    with the input's other keys kept and `noise_mask` / `batch_index` expanded.

    **Raises:** `ValueError` with one line naming the node and the input to change: an empty
    window (`steps` 0, or `start_at_step` not below `steps` and `end_at_step`; the Python API
    returns an empty batch there, the node refuses because an empty LATENT breaks the nodes
    after it), a LATENT without latents or with an empty axis, a `noise_mask` that is not a
    mask tensor, a `batch_index` that is not one integer in [0, 2**32 - 1] per latent, and
    every unknown name or out-of-range number.
    """
    fn = NODE_ID
    samples = check_latent_image(fn, latent_image)
    check_choice(fn, "sampler_name", sampler_name, [*SAMPLERS, *_comfy_names("SAMPLERS")])
    check_choice(fn, "scheduler", scheduler, [*SCHEDULERS, *_comfy_names("SCHEDULERS")])
    steps, start_at_step, end_at_step = check_window(fn, steps, start_at_step, end_at_step)
    check_choice(fn, "noise_source", noise_source, NOISE_SOURCES)
    check_choice(fn, "mode", mode, MODES)
    check_choice(fn, "coupling", coupling, COUPLINGS)
    seed = check_seed(fn, seed)
    if not isinstance(normalize, bool):
        raise ValueError(f"{fn}: normalize must be True or False, got {normalize!r}")
    ms, divisor, latent_format = read_model(fn, model, mode)
    check_latent_fits_model(f"{fn}: latent_image", model, tuple(samples.shape))
    try:
        return _compute(
            fn, model, ms, sampler_name, scheduler, steps, start_at_step, end_at_step, latent_image, samples,
            normalize, seed, noise_source, mode, coupling, divisor, latent_format,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(node_message(fn, e)) from None


def _compute(
    fn, model, ms, sampler_name, scheduler, steps, start_at_step, end_at_step, latent_image, samples,
    normalize, seed, noise_source, mode, coupling, divisor, latent_format,
) -> dict[str, Any]:  # fmt: skip
    """The node's work once every input is checked (JAX is imported here)."""
    enable_node_compilation_cache()
    import numpy as np

    import jax_unsampler as ju
    from jax_unsampler._unsample import mode_noise_options

    sigmas = node_sigmas(fn, model, ms, sampler_name, scheduler, steps, start_at_step, end_at_step, divisor)
    options = mode_noise_options(ms, latent_format, mode)
    if noise_source == "torch":
        z = noised_latents_torch(seed, samples, sigmas, normalize=normalize, coupling=coupling, **options)
        return latent_with_samples(latent_image, z)
    index = batch_index_ids(latent_image)
    z_jax = ju.noised_latents(
        _jax_key(seed), to_jax(samples.cpu()), sigmas,
        normalize=normalize, coupling=coupling,
        batch_index=None if index is None else np.asarray(index, np.uint32), **options,
    )  # fmt: skip
    return latent_with_samples(latent_image, z_jax)


class BatchUnsamplerJax:
    """ComfyUI node: the BatchUnsampler of ComfyUI-Iterative-Mixer, working on today's ComfyUI.

    Same required inputs and output as the original, plus optional `seed`, `noise_source`,
    `mode` and `coupling` (see `batch_unsample_comfy`).
    """

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = sampler_and_scheduler_names()
        return {
            "required": {
                "model": ("MODEL",),
                "sampler_name": (samplers,),
                "scheduler": (schedulers,),
                "steps": ("INT", {"default": 10000, "min": 0, "max": MAX_STEPS}),
                "start_at_step": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS}),
                "end_at_step": ("INT", {"default": 10000, "min": 1, "max": MAX_STEPS}),
                "latent_image": ("LATENT",),
                "normalize": ("BOOLEAN", {"default": False}),
            },
            "optional": {
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": SEED_MAX,
                        "control_after_generate": True,
                        "tooltip": "Seed of the noise (jax: a PRNG key; torch: the original's generator).",
                    },
                ),
                "noise_source": (
                    list(NOISE_SOURCES),
                    {
                        "default": "jax",
                        "tooltip": "jax: keyed JAX noise. torch: the original node's noise, bit for bit.",
                    },
                ),
                "mode": (
                    list(MODES),
                    {
                        "default": "node",
                        "tooltip": "node: the original (sigmas divided by the latent scale factor). "
                        "model: what ComfyUI feeds the model at each of its sigmas.",
                    },
                ),
                "coupling": (
                    list(COUPLINGS),
                    {
                        "default": "independent",
                        "tooltip": "How the noise of consecutive steps relates (independent: the original).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent_batch",)
    FUNCTION = "unsample"
    CATEGORY = "latent/jax-unsampler"
    DESCRIPTION = (
        "A latent noised step by step along the model's sigma schedule, one batch entry per "
        "step (BatchUnsampler of ComfyUI-Iterative-Mixer), computed with JAX."
    )

    def unsample(self, **inputs):
        # ComfyUI passes every input by name, as INPUT_TYPES names them; optional ones it lacks
        # take batch_unsample_comfy's defaults.
        return (batch_unsample_comfy(**inputs),)


NODE_CLASS_MAPPINGS = {NODE_ID: BatchUnsamplerJax}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: DISPLAY_NAME}
