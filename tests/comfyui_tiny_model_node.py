"""A test-only ComfyUI node (copied into a scratch custom_nodes/ by the server test): a MODEL
without weights.

`TinyModelForTests` returns a ModelPatcher around a bare torch module carrying what ComfyUI's
SD1.5 model config gives a loaded checkpoint: its model sampling (`model_base.model_sampling`)
and latent format. That is all the unsampler node reads. `broken=True` returns a ModelPatcher
around a module without model sampling: the bad MODEL input of the test.

`TinyConditioningForTests` returns a CONDITIONING without a text encoder: seeded random
(1, 77, 768) embeddings, what CLIPTextEncode gives an SD1.5 model (the tiny checkpoint the
server tests use has no text encoder).
"""

import comfy.model_base
import comfy.model_patcher
import comfy.supported_models
import torch


class TinyModelForTests:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"broken": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, broken):
        module = torch.nn.Module()
        module.proj = torch.nn.Linear(2, 2)
        if not broken:
            config = comfy.supported_models.SD15(dict(comfy.supported_models.SD15.unet_config))
            module.model_config = config
            module.model_sampling = comfy.model_base.model_sampling(config, config.model_type({}))
            module.latent_format = config.latent_format  # the config holds an instance
        cpu = torch.device("cpu")
        return (comfy.model_patcher.ModelPatcher(module, load_device=cpu, offload_device=cpu),)


class TinyConditioningForTests:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing"

    def encode(self, seed):
        embedding = torch.randn((1, 77, 768), generator=torch.Generator().manual_seed(seed))
        return ([[embedding, {}]],)


NODE_CLASS_MAPPINGS = {
    "TinyModelForTests": TinyModelForTests,
    "TinyConditioningForTests": TinyConditioningForTests,
}
