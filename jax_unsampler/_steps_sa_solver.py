"""SA-Solver (k-diffusion's `sample_sa_solver`, `sample_sa_solver_pece` and `sa_solver.py`)."""

from __future__ import annotations

from ._step_base import Sampler

SAMPLERS: dict[str, Sampler] = {}
