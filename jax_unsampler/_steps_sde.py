"""SDE samplers: DPM-Solver++ SDE, its 2M and 3M multistep forms, ER-SDE, SEEDS (k-diffusion's
`sample_dpmpp_sde`, ...): each step adds noise drawn over its own sub-intervals."""

from __future__ import annotations

from ._step_base import Sampler

SAMPLERS: dict[str, Sampler] = {}
