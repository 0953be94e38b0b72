"""ComfyUI's own sampler functions run live beside `ju.sample` and `tb.sample_torch`.

The same closed-form denoiser on both sides (Gaussian data, whose posterior mean is exact), the
same noise (a smooth function of `(sigma, sigma_next)`, so that sigmas computed an ulp apart on
the two sides give noise an ulp apart: k-diffusion's `noise_sampler` contract), the same sigmas,
an EPS model (SD1.5's discrete sampling, karras) and a flow model (SD3's CONST sampling, whose
first sigma is 1), batch 2, float32.

ComfyUI's function for a name is the one `comfy.samplers.sampler_object(name)` runs (ddim is
its euler; uni_pc its UniPC module; dpm_fast and dpm_adaptive its wrappers), called with a
model object that carries the model sampling where the samplers look for it.
"""

from __future__ import annotations

import inspect
import types

import jax
import jax.numpy as jnp
import numpy as np

import jax_unsampler as ju

SHAPE = (2, 3, 4, 5)  # batch 2
MODELS = {
    # name: (ComfyUI family of conftest.COMFY_FAMILIES, our preset, scheduler, steps)
    "eps": ("sd15", "sd15", "karras", 8),
    "flow": ("sd3", "sd3", "simple", 8),
}


def data_moments() -> tuple[np.ndarray, np.ndarray]:
    """Per-element mean and standard deviation of the Gaussian data."""
    rng = np.random.default_rng(7)
    mu = rng.normal(0.0, 0.5, SHAPE[1:]).astype(np.float32)
    c = rng.uniform(0.4, 1.2, SHAPE[1:]).astype(np.float32)
    return mu, c


def posterior_mean(xp, x, sigma, mu, c, flow: bool):
    """E[x0 | x] for x0 ~ N(mu, c^2): `x = x0 + sigma eps` (EPS) or `(1 - sigma) x0 + sigma eps`
    (flow). `sigma` is `(B,)`; `xp` is jnp or torch."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    if flow:
        a = 1 - s
        return mu + a * c**2 / (a**2 * c**2 + s**2) * (x - a * mu)
    return mu + c**2 / (c**2 + s**2) * (x - mu)


CFG = 2.0  # the guidance scale of the CFG++ cases


def uncond_moments() -> tuple[np.ndarray, np.ndarray]:
    """The unconditional prediction's Gaussian data (the CFG++ cases): another mean and spread."""
    mu, c = data_moments()
    return (0.5 * mu - 0.2).astype(np.float32), (1.1 * c).astype(np.float32)


def guided(name: str) -> bool:
    """The CFG++ samplers read the unconditional prediction: those cases use a guided denoiser."""
    return name.endswith("_cfg_pp")


def noise_fields() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal(SHAPE).astype(np.float32)


def smooth_noise(xp, sigma, sigma_next):
    """`A sin(3.1 s + 1.7 s') + B cos(2.3 s - 0.9 s')`: unit variance up to a few percent, and
    smooth in the sigmas (see the module docstring)."""
    a, b = noise_fields()
    if xp is jnp:
        a, b = jnp.asarray(a), jnp.asarray(b)
    else:
        a, b = xp.from_numpy(a), xp.from_numpy(b)
    return a * xp.sin(3.1 * sigma + 1.7 * sigma_next) + b * xp.cos(2.3 * sigma - 0.9 * sigma_next)


def start_latent(sigma0: float, flow: bool) -> np.ndarray:
    rng = np.random.default_rng(3)
    mu, c = data_moments()
    x0 = mu + c * rng.standard_normal(SHAPE).astype(np.float32)
    eps = rng.standard_normal(SHAPE).astype(np.float32)
    if flow:
        return ((1 - sigma0) * x0 + sigma0 * eps).astype(np.float32)
    return (x0 + sigma0 * eps).astype(np.float32)


def case(comfy, model: str):
    """`(comfy model sampling, our model sampling, sigmas float32, start latent, flow)`."""
    from conftest import COMFY_FAMILIES, comfy_sampling

    family, preset, scheduler, steps = MODELS[model]
    sampling_class, mixin, settings, _ = COMFY_FAMILIES[family]
    cms = comfy_sampling(comfy, sampling_class, mixin, settings)
    sigmas = comfy.samplers.calculate_sigmas(cms, scheduler, steps).float().numpy()
    flow = mixin == "CONST"
    return cms, ju.preset(preset).model_sampling, sigmas, start_latent(float(sigmas[0]), flow), flow


def comfyui_sample(comfy, name: str, model: str, options: dict | None = None) -> np.ndarray:
    """ComfyUI's function for `name` on the case of `model`, with `smooth_noise`."""
    import torch

    cms, _, sigmas, x, flow = case(comfy, model)
    mu, c = (torch.from_numpy(v) for v in data_moments())
    mu_u, c_u = (torch.from_numpy(v) for v in uncond_moments())

    def den(x, sigma, model_options=None, **extra):
        cond = posterior_mean(torch, x, sigma, mu, c, flow)
        if not guided(name):
            return cond
        uncond = posterior_mean(torch, x, sigma, mu_u, c_u, flow)
        out = uncond + (cond - uncond) * CFG  # ComfyUI's cfg_function, then its post-CFG hooks
        for hook in (model_options or {}).get("sampler_post_cfg_function", []):
            out = hook({"denoised": out, "cond_denoised": cond, "uncond_denoised": uncond, "sigma": sigma,
                        "input": x, "cond_scale": CFG, "model_options": model_options})  # fmt: skip
        return out

    inner = types.SimpleNamespace(
        model_patcher=types.SimpleNamespace(get_model_object=lambda key: {"model_sampling": cms}[key]),
        model_sampling=cms,
        inner_model=types.SimpleNamespace(model_sampling=cms),
    )
    model_obj = _Callable(den, inner)
    function = comfy.samplers.sampler_object(name).sampler_function
    kwargs = dict(options or {})
    parameters = inspect.signature(function).parameters
    if "noise_sampler" in parameters:
        kwargs["noise_sampler"] = lambda s, s_next: smooth_noise(torch, s, s_next)
    with torch.no_grad():
        out = function(
            model_obj, torch.from_numpy(x), torch.from_numpy(sigmas), extra_args={"seed": 0}, callback=None,
            disable=True, **kwargs,
        )  # fmt: skip
    return out.numpy()


class _Callable:
    """A k-diffusion model: `model(x, sigma, **extra_args)`, with `inner_model` for the model
    sampling lookups ComfyUI's samplers make."""

    def __init__(self, fn, inner_model):
        self._fn, self.inner_model = fn, inner_model

    def __call__(self, x, sigma, **extra):
        return self._fn(x, sigma, **extra)


def jax_sample(comfy, name: str, model: str, options: dict | None = None, jit: bool = False) -> np.ndarray:
    _, ms, sigmas, x, flow = case(comfy, model)
    mu, c = (jnp.asarray(v) for v in data_moments())
    mu_u, c_u = (jnp.asarray(v) for v in uncond_moments())

    def den(x, sigma):
        return posterior_mean(jnp, x, sigma, mu, c, flow)

    if guided(name):
        den = ju.cfg_denoiser(den, lambda x, sigma: posterior_mean(jnp, x, sigma, mu_u, c_u, flow), CFG)

    def run(x, sigmas):
        return ju.sample(
            den, x, sigmas, sampler=name, options=options, model_sampling=ms,
            noise=lambda s, s_next: smooth_noise(jnp, s, s_next),
        )  # fmt: skip

    return np.asarray((jax.jit(run) if jit else run)(jnp.asarray(x), jnp.asarray(sigmas)))


def torch_sample(comfy, name: str, model: str, options: dict | None = None) -> np.ndarray:
    import torch

    import torch_bridge as tb

    _, ms, sigmas, x, flow = case(comfy, model)
    mu, c = (torch.from_numpy(v) for v in data_moments())
    mu_u, c_u = (torch.from_numpy(v) for v in uncond_moments())

    def den(x, sigma):
        return posterior_mean(torch, x, sigma, mu, c, flow)

    if guided(name):  # ju.cfg_denoiser's rule, on torch tensors
        den = ju.cfg_denoiser(den, lambda x, sigma: posterior_mean(torch, x, sigma, mu_u, c_u, flow), CFG)
    out = tb.sample_torch(
        den, torch.from_numpy(x), sigmas,
        sampler=name, options=options, noise_scaling="const" if flow else "eps", model_sampling=ms,
        noise=lambda s, s_next: smooth_noise(torch, s, s_next),
    )  # fmt: skip
    return out.numpy()


def assert_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Within 2e-4 of the latent's scale: both sides run the same formulas in float32, in
    possibly different association; over 8 steps (up to 4 denoiser calls a step, coefficient
    formulas with cancellations such as `expm1(h) - h`) that stays far below 1e-4 relative, and
    a wrong coefficient or a missed branch is off by 1e-2 or more."""
    scale = float(np.max(np.abs(expected))) or 1.0
    assert np.all(np.isfinite(got)), f"{what}: not finite"
    err = float(np.max(np.abs(got - expected)))
    assert err <= 2e-4 * scale, f"{what}: off by {err:.3g} (scale {scale:.3g})"
