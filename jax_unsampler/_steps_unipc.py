"""UniPC (ComfyUI's `extra_samplers/uni_pc.py`: `sample_unipc`, `sample_unipc_bh2`)."""

from __future__ import annotations

from ._step_base import Sampler

SAMPLERS: dict[str, Sampler] = {}
