"""DPM-Solver (k-diffusion's `DPMSolver`: ComfyUI's `dpm_fast` and `dpm_adaptive` wrappers),
which choose their own steps: `sample` only."""

from __future__ import annotations

from ._step_base import Sampler

SAMPLERS: dict[str, Sampler] = {}
