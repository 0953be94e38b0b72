"""Regenerates jax_unsampler/data/presets.json from a ComfyUI checkout and the golden data.

    python tools/sync_presets_from_comfyui.py /path/to/ComfyUI

For each preset it reads ComfyUI's own supported-model config (model type, sampling settings)
and latent format (scale, shift, per-channel statistics, RGB preview factors), and checks the
golden families against `tests/data/sigmas.json.gz`. Run it when ComfyUI adds models; the
`COMFYUI_PATH` tests check the result against the same checkout.
"""

from __future__ import annotations

import gzip
import inspect
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "jax_unsampler" / "data" / "presets.json"

# preset name -> (ComfyUI supported-model class, model type where the state dict decides it)
PRESETS = {
    "sd15": ("SD15", None),
    "sd2": ("SD20", "EPS"),
    "sd2-v": ("SD20", "V_PREDICTION"),
    "sdxl": ("SDXL", None),
    "sdxl-refiner": ("SDXLRefiner", None),
    "ssd-1b": ("SSD1B", None),
    "segmind-vega": ("Segmind_Vega", None),
    "koala-700m": ("KOALA_700M", None),
    "koala-1b": ("KOALA_1B", None),
    "stable-zero123": ("Stable_Zero123", None),
    "lotus-d": ("LotusD", None),
    "sd-x4-upscaler": ("SD_X4Upscaler", None),
    "svd": ("SVD_img2vid", None),
    "sv3d": ("SV3D_u", None),
    "sd3": ("SD3", None),
    "sd3.5": ("SD3", None),
    "auraflow": ("AuraFlow", None),
    "pixart-alpha": ("PixArtAlpha", None),
    "pixart-sigma": ("PixArtSigma", None),
    "hunyuan-dit": ("HunyuanDiT", None),
    "hunyuan-dit-1.0": ("HunyuanDiT1", None),
    "flux-dev": ("Flux", None),
    "flux-fill": ("FluxInpaint", None),
    "flux-kontext": ("Flux", None),
    "flux-schnell": ("FluxSchnell", None),
    "chroma": ("Chroma", None),
    "hidream": ("HiDream", None),
    "lumina2": ("Lumina2", None),
    "omnigen2": ("Omnigen2", None),
    "qwen-image": ("QwenImage", None),
    "hunyuan-image-2.1": ("HunyuanImage21", None),
    "hunyuan-image-2.1-refiner": ("HunyuanImage21Refiner", None),
    "stable-cascade-c": ("Stable_Cascade_C", None),
    "stable-cascade-b": ("Stable_Cascade_B", None),
    "mochi": ("GenmoMochi", None),
    "ltxv": ("LTXV", None),
    "hunyuan-video": ("HunyuanVideo", None),
    "cosmos-1": ("CosmosT2V", None),
    "cosmos-predict2": ("CosmosT2IPredict2", None),
    "wan21": ("WAN21_T2V", None),
    "wan22-5b": ("WAN22_T2V", None),
    "hunyuan3d-2": ("Hunyuan3Dv2", None),
    "hunyuan3d-2-mini": ("Hunyuan3Dv2mini", None),
    "hunyuan3d-2.1": ("Hunyuan3Dv2_1", None),
    "stable-audio": ("StableAudio", None),
    "ace-step": ("ACEStep", None),
}
# Families whose model type ComfyUI reads from the checkpoint: taken from the golden record.
FROM_GOLDEN = ("playground-2.5",)


def _comfy(path: str):
    sys.path.insert(0, path)
    sys.path.insert(0, str(ROOT / "tests"))
    from test_torch_bridge_comfyui import _StandIns  # torchvision stand-ins

    sys.meta_path.insert(0, _StandIns())
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models

    return comfy


def _model_type(comfy, config_cls, override):
    """The model type ComfyUI's `get_model` gives this config (its model class's default)."""
    if override:
        return override
    source = inspect.getsource(config_cls.get_model)
    explicit = re.search(r"model_type\s*=\s*model_base\.ModelType\.(\w+)", source)
    if explicit:
        return explicit.group(1)
    match = re.search(r"model_base\.(\w+)\(", source)
    if match is None or "self.model_type(" in source:
        return config_cls.model_type(config_cls(dict(config_cls.unet_config)), {}, "").name
    default = (
        inspect.signature(getattr(comfy.model_base, match.group(1)).__init__).parameters["model_type"].default
    )
    return default.name


def _numbers(value):
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    flat = value
    while isinstance(flat, list) and len(flat) == 1 and isinstance(flat[0], list):
        flat = flat[0]
    return (
        flat
        if not isinstance(flat, list)
        else [_numbers(v) if isinstance(v, list) else float(v) for v in flat]
    )


def _latent_format(fmt) -> dict:
    mean, std = getattr(fmt, "latents_mean", None), getattr(fmt, "latents_std", None)
    return {
        "scale_factor": float(fmt.scale_factor),
        "shift_factor": float(getattr(fmt, "shift_factor", 0.0) or 0.0),
        "latents_mean": None if mean is None else [float(v) for v in mean.flatten().tolist()],
        "latents_std": None if std is None else [float(v) for v in std.flatten().tolist()],
        "latent_rgb_factors": _numbers(fmt.latent_rgb_factors),
        "latent_rgb_factors_bias": _numbers(getattr(fmt, "latent_rgb_factors_bias", None)),
    }


def main(path: str) -> None:
    comfy = _comfy(path)
    with gzip.open(ROOT / "tests" / "data" / "sigmas.json.gz", "rt") as f:
        golden = json.load(f)["families"]
    formats, presets = {}, {}
    for name, (config_name, override) in PRESETS.items():
        config_cls = getattr(comfy.supported_models, config_name)
        fmt = config_cls.latent_format()
        fmt_name = type(fmt).__name__
        formats[fmt_name] = _latent_format(fmt)
        presets[name] = {
            "model_type": _model_type(comfy, config_cls, override),
            "sampling_settings": dict(config_cls.sampling_settings),
            "latent_format": fmt_name,
            "latent_channels": fmt.latent_channels,
            "latent_dimensions": fmt.latent_dimensions,
            "comfyui_config": config_name,
        }
    for name in FROM_GOLDEN:
        record = golden[name]
        fmt = dict(record["latent_format"])
        fmt_name = fmt.pop("class")
        formats[fmt_name] = fmt
        presets[name] = {
            "model_type": record["model_type"],
            "sampling_settings": record["sampling_settings"],
            "latent_format": fmt_name,
            "latent_channels": record["latent_channels"],
            "latent_dimensions": record["latent_dimensions"],
            "comfyui_config": "SDXL (EDM, read from the checkpoint)",
        }
    for name, record in golden.items():  # the golden data is the arbiter
        p = presets[name]
        assert p["model_type"] == record["model_type"], (name, p["model_type"], record["model_type"])
        assert p["sampling_settings"] == record["sampling_settings"], name
        assert p["latent_channels"] == record["latent_channels"], name
        assert p["latent_dimensions"] == record["latent_dimensions"], name
        assert formats[p["latent_format"]]["scale_factor"] == record["latent_scale_factor"], name
    out = {
        "_comment": "Model families: ComfyUI's model type, sampling settings and latent format numbers "
        "(generated by tools/sync_presets_from_comfyui.py from ComfyUI a125cd84 and the golden data).",
        "latent_formats": dict(sorted(formats.items())),
        "presets": presets,
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}: {len(presets)} presets, {len(formats)} latent formats")


if __name__ == "__main__":
    main(sys.argv[1])
