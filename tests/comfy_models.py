"""A ComfyUI BaseModel for the node tests: a network that is the exact denoiser of Gaussian data
whose mean is the mean of its cross-attention conditioning, so cfg and conditioning matter and
every result has a formula. Needs ComfyUI imported (the `comfy` fixture)."""

from __future__ import annotations

import torch

MU_POS, MU_NEG, SPREAD = 0.25, -0.4, 0.8
POS, NEG = [[torch.full((1, 3, 8), MU_POS), {}]], [[torch.full((1, 3, 8), MU_NEG), {}]]
"""CONDITIONING whose cross-attention means are the test model's data means."""


def gaussian_denoised(x, sigma, mu):
    """The exact denoiser of N(mu, SPREAD^2) data (torch or JAX arrays alike)."""
    sig2 = sigma.reshape((-1,) + (1,) * (x.ndim - 1)) ** 2
    return mu + SPREAD**2 / (SPREAD**2 + sig2) * (x - mu)


def tiny_base_model(comfy, family: str):
    """A ComfyUI BaseModel whose network returns, for the model type's prediction, the exact
    Gaussian denoiser with mean = the mean of its cross-attention conditioning."""
    import comfy.model_base
    import comfy.supported_models_base
    from conftest import COMFY_FAMILIES

    sampling_class, mixin, settings, latent_format = COMFY_FAMILIES[family]
    model_type = {"EPS": comfy.model_base.ModelType.EPS, "CONST": comfy.model_base.ModelType.FLOW}[mixin]

    class Net(torch.nn.Module):
        def __init__(self, device=None, operations=None, **_):
            super().__init__()
            self.dtype = torch.float32
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # something for ComfyUI to load
            self.sampling = None

        def forward(self, xc, t, context=None, control=None, transformer_options=None, **kwargs):
            sigma = transformer_options["sigmas"].float()  # the step's (B,) sigmas: all equal
            sigma = sigma.repeat(xc.shape[0] // sigma.shape[0])  # cond and uncond run as one batch
            ms = self.sampling
            x = xc / ms.calculate_input(sigma, torch.ones_like(xc))  # undo ComfyUI's input scaling
            mu = context.float().mean(dim=(1, 2)).reshape((-1,) + (1,) * (x.ndim - 1))
            denoised = gaussian_denoised(x, sigma, mu) + self.anchor
            # calculate_denoised is x - sigma * output for both EPS and CONST models.
            return (x - denoised) / sigma.reshape((-1,) + (1,) * (x.ndim - 1))

    class Config(comfy.supported_models_base.BASE):
        unet_config: dict = {}
        unet_extra_config: dict = {}
        sampling_settings = dict(settings)
        memory_usage_factor = 0.01

    Config.latent_format = getattr(comfy.latent_formats, latent_format)
    model = comfy.model_base.BaseModel(
        Config({}), model_type=model_type, device=torch.device("cpu"), unet_model=Net
    )
    model.diffusion_model.sampling = model.model_sampling
    assert type(model.model_sampling).__mro__[1].__name__ == sampling_class
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
