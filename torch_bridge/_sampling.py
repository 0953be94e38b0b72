"""The samplers' steps of `jax_unsampler._steps` on torch tensors, around a torch denoiser.

A ComfyUI model is a torch module that JAX cannot trace, so the nodes run the package's steps
here, in a Python loop: the same step and blend functions as the JAX loop, with torch's
spellings of the few functions they call (`TORCH_OPS`). Sigmas are float32 0-d tensors, as
k-diffusion's samplers index them, so the arithmetic is the original's, in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from jax_unsampler._steps import BLENDS, SAMPLER_STEPS, Context, Sigmas, no_model_sampling

EULER = SAMPLER_STEPS["euler"].step  # inversion's step from sigma 0 (`Sampler.steps_from_zero`)

TorchDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`D(x, sigma)`: `(B, ...)` latents at a `(B,)` sigma -> the denoised `(B, ...)` latents."""


def _tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=torch.float32, device=like.device)


class _TorchOps:
    """`jax_unsampler._steps.Ops` for torch tensors."""

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        if isinstance(cond, bool):
            return a if cond else b
        like = cond
        return torch.where(cond, _tensor(a, like), _tensor(b, like))

    @staticmethod
    def choose(pred: Any, if_true: Callable, if_false: Callable, operand: Any) -> Any:
        return if_true(operand) if bool(pred) else if_false(operand)

    log = staticmethod(torch.log)
    exp = staticmethod(torch.exp)
    expm1 = staticmethod(torch.expm1)
    log1p = staticmethod(torch.log1p)
    sqrt = staticmethod(torch.sqrt)
    arccos = staticmethod(torch.arccos)
    sin = staticmethod(torch.sin)
    abs = staticmethod(torch.abs)
    sigmoid = staticmethod(torch.sigmoid)
    isfinite = staticmethod(torch.isfinite)
    zeros_like = staticmethod(torch.zeros_like)

    @staticmethod
    def minimum(a: Any, b: Any) -> Any:
        like = a if isinstance(a, torch.Tensor) else b
        return torch.minimum(_tensor(a, like), _tensor(b, like))

    @staticmethod
    def maximum(a: Any, b: Any) -> Any:
        like = a if isinstance(a, torch.Tensor) else b
        return torch.maximum(_tensor(a, like), _tensor(b, like))

    @staticmethod
    def scalar(value: Any, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=like.device)

    @staticmethod
    def take(table: Any, i: Any) -> Any:
        return table[int(i)]

    @staticmethod
    def while_loop(cond: Callable[[Any], Any], body: Callable[[Any], Any], init: Any) -> Any:
        state = init
        while bool(cond(state)):
            state = body(state)
        return state

    @staticmethod
    def fori_loop(n: int, body: Callable[[Any, Any], Any], init: Any) -> Any:
        state = init
        for i in range(n):
            state = body(torch.tensor(float(i)), state)
        return state

    @staticmethod
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def item_sum(x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)

    @staticmethod
    def column(w: Any, batch: int) -> torch.Tensor:
        return torch.as_tensor(w, dtype=torch.float32).expand(batch).reshape(-1, 1)

    @staticmethod
    def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        axes = tuple(range(2, x.ndim))
        return x.mean(dim=axes, keepdim=True), x.std(dim=axes, keepdim=True, unbiased=True)


TORCH_OPS: Any = _TorchOps()  # an `_steps.Ops`


def call_denoiser(fn: str, denoiser: TorchDenoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """`denoiser(x, sigma * ones(B))` in float32, checked to return a tensor of x's shape; its
    own errors (TypeError, ValueError, torch's RuntimeError, IndexError: e.g. one written for a
    scalar sigma) in one line naming `fn` and the shapes, as the JAX side's."""
    batch = x.shape[0]
    try:
        out = denoiser(x, sigma.reshape(1).expand(batch).to(torch.float32))
    except _OUT_OF_MEMORY:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        if str(err).startswith(f"{fn}:"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{fn}: the denoiser failed on x of shape {tuple(x.shape)} and sigma of shape ({batch},) "
            f"(one noise level per item, k-diffusion's convention; broadcast it as "
            f"sigma.reshape(-1, *[1] * (x.ndim - 1))): {first}"
        ) from err
    return _checked(fn, out, x)


_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _checked(fn: str, out: Any, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        if isinstance(out, torch.Tensor):
            got = str(tuple(out.shape))
        else:
            kind = type(out)
            got = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
            if isinstance(getattr(out, "shape", None), tuple):
                got += f" of shape {out.shape}"
        raise ValueError(
            f"{fn}: denoiser must return a torch tensor of shape {tuple(x.shape)} (the latent's), got {got}"
        )
    if not (out.is_floating_point()):
        raise ValueError(f"{fn}: denoiser must return a real floating array, got dtype {out.dtype}")
    return out.to(torch.float32)


def run_steps(
    fn: str,
    sampler: str,
    denoiser: TorchDenoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    start: int = 0,
    entry: Callable[[int], torch.Tensor] | None = None,
    blend: str | None = None,
    c1: torch.Tensor | None = None,
    noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    noise_scaling: str = "eps",
    options: tuple[tuple[str, Any], ...] = (),
    skip_equal: bool = False,
    zero_rule: bool = False,
    on_state: Callable[[int, torch.Tensor], None] | None = None,
    first_sigma: float | None = None,
    percent_sigma: Callable[[float], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One pass of `sampler` over steps `start..len(sigmas)-2` from `x` (float32, model space).

    Mixing: `entry(i)` is step `i`'s noised latent (the pass starts from `entry(start)`) and the
    blend is `blend` with weight `c1[i]`. `noise(sigma, sigma_next)` gives a standard normal
    latent, called as often as the sampler asks (k-diffusion's `noise_sampler`; the original's
    draws, in its order). `options`: the sampler's options, defaults filled in. `zero_rule`:
    inversion's rule for a step from sigma 0 (`jax_unsampler._steps.Sampler.steps_from_zero`).
    `on_state(i, x)`
    is called with the state after step `i`. `first_sigma`: a flow model's first sigma off 1
    (`jax_unsampler._sampling.offset_first_sigma`). `percent_sigma`: the model sampling's
    `percent_to_sigma` (`jax_unsampler._step_base.Context`).
    """
    spec = SAMPLER_STEPS[sampler]
    ops = TORCH_OPS
    sig = sigmas.to(device=x.device, dtype=torch.float32)
    if spec.snr_offset and noise_scaling == "const" and first_sigma is not None and bool(sig[0] >= 1):
        sig = sig.clone()
        sig[0] = first_sigma
    settings = dict(options)
    blend_fn = None if blend is None else BLENDS[blend]
    if entry is not None:
        x = entry(start)

    def no_noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"{fn}: sampler {sampler!r} draws noise, and none was given")

    def den(v: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return call_denoiser(fn, denoiser, v, at)

    percents = no_model_sampling(fn, sampler) if percent_sigma is None else percent_sigma
    guided = None
    if callable(getattr(denoiser, "with_uncond", None)):  # a guided denoiser (the CFG++ samplers)

        def guided(v: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            d, u = denoiser.with_uncond(v, at.reshape(1).expand(v.shape[0]).to(torch.float32))  # type: ignore[attr-defined]
            return _checked(fn, d, v), _checked(fn, u, v)

    def context(mix: Callable[[torch.Tensor], torch.Tensor]) -> Context:
        return Context(ops, den, mix, noise or no_noise, noise_scaling, settings, guided, percents)

    if spec.solve is not None:  # a sampler that chooses its own steps
        return spec.solve(context(lambda v: v), x, sig)
    state: Any = spec.init(context(lambda v: v), x)
    n = sig.shape[0] - 1
    for i in range(start, n):
        prev = sig[i - 1] if i > start else sig[i]
        from_zero = zero_rule and not spec.steps_from_zero
        s = Sigmas(i, prev, sig[i], sig[i + 1], i == start or (from_zero and bool(prev == 0)), sig)
        if skip_equal and bool(s.next == s.sigma):
            if on_state is not None:
                on_state(i, x)
            continue
        z = None if entry is None else entry(i)
        w = None if c1 is None else c1[i]

        def mix(v: torch.Tensor, z: Any = z, w: Any = w) -> torch.Tensor:
            return v if blend_fn is None else blend_fn(ops, z, v, w, None)

        step = EULER if from_zero and bool(s.sigma == 0) else spec.step
        x, state = step(context(mix), x, s, state)
        if on_state is not None:
            on_state(i, x)
    return x


def sample_torch(
    denoiser: TorchDenoiser,
    latent: torch.Tensor,
    sigmas: Any,
    *,
    sampler: str,
    seed: int | None = None,
    noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    options: dict[str, Any] | None = None,
    noise_scaling: str = "eps",
    model_sampling: Any = None,
) -> torch.Tensor:
    """`jax_unsampler.sample` around a torch denoiser: the same steps, run in torch.

    **Arguments:**

    - `denoiser`: `denoiser(x, sigma) -> denoised`, torch tensors, `sigma` of shape `(B,)`.
    - `latent`: the `(B, ...)` start at `sigmas[0]`.
    - `sigmas`: descending noise levels (a tensor, an array or a list), at least two.
    - `sampler`: one of `jax_unsampler.SAMPLE_SAMPLERS`.
    - `seed`: seeds a `torch.Generator` whose `randn` gives the sampler's draws, in order,
      where `noise` is not given (required then for the samplers that draw noise).
    - `noise`: `noise(sigma, sigma_next) -> (B, ...)` standard normal noise (k-diffusion's
      `noise_sampler`).
    - `options`: the sampler's options by ComfyUI's names; `noise_scaling`: `"eps"` or
      `"const"`; `model_sampling`: a `jax_unsampler.ModelSampling` (flow models' first sigma,
      sa_solver's tau interval).

    **Returns:** the sampled latent, `latent`'s shape, float32.
    """
    import numpy as np

    from jax_unsampler._names import NOISE_SCALINGS, SAMPLE_SAMPLERS
    from jax_unsampler._steps import sampler_options
    from jax_unsampler._validation import check_choice

    fn = "sample_torch"
    sampler = check_choice(fn, "sampler", sampler, SAMPLE_SAMPLERS)
    opts = sampler_options(fn, sampler, options)
    check_choice(fn, "noise_scaling", noise_scaling, NOISE_SCALINGS)
    if not isinstance(latent, torch.Tensor):
        raise TypeError(f"{fn}: latent must be a torch.Tensor, got {type(latent).__name__}")
    x = latent.detach().to(torch.float32)
    sig = torch.as_tensor(np.asarray(sigmas, np.float32), device=x.device)
    if noise is None and SAMPLER_STEPS[sampler].noise:
        if seed is None:
            raise ValueError(f"{fn}: sampler {sampler!r} draws fresh noise: pass seed= or noise=")
        generator = torch.Generator(device="cpu").manual_seed(int(seed))

        def noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
            return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)

    first_sigma, percents = model_sampling_reads(model_sampling, x.device)
    return run_steps(
        fn, sampler, denoiser, x, sig, noise=noise, noise_scaling=noise_scaling, options=opts,
        first_sigma=first_sigma, percent_sigma=percents,
    )  # fmt: skip


def model_sampling_reads(
    model_sampling: Any, device: torch.device
) -> tuple[float | None, Callable[[float], torch.Tensor] | None]:
    """What `run_steps` reads of a `jax_unsampler.ModelSampling` (or None): a flow model's first
    sigma off 1 (`first_sigma`) and its `percent_to_sigma` (`percent_sigma`)."""
    from jax_unsampler._model_sampling import percent_to_sigma, snr_offset_sigma

    if model_sampling is None:
        return None, None
    offset = snr_offset_sigma(model_sampling)

    def percents(percent: float) -> torch.Tensor:
        return torch.tensor(float(percent_to_sigma(model_sampling, percent)), device=device)

    return None if offset is None else float(offset), percents
