"""torch_bridge.iterative_mixing_sample_torch: the original's own torch-seeded runs (recorded by
tools/record_iterative_mixer.py after torch.manual_seed(seed)), LCM and rewind included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import quick_subset
from mixing_toys import recorded, toy

from torch_bridge import iterative_mixing_sample_torch

MIXES = recorded("mix")
# Every case whose original run drew more than the first noised batch (LCM, rewind), and a few plain ones.
CASES = [c for c in MIXES if c[0]["draws"] > 1] + [c for c in MIXES if c[0]["draws"] == 1][:4]


@pytest.mark.parametrize(
    "case", quick_subset(CASES, 12, ids=[f"{r['i']}-{r['sampler']}-{r['draws']}draws" for r, _ in CASES])
)
def test_reproduces_original_with_its_seed(case):
    r, a = case
    got = iterative_mixing_sample_torch(
        toy(r["toy"], a["mu"]),
        r["seed"],
        torch.from_numpy(a["latent"]),
        torch.from_numpy(a["sigmas"]),
        sampler=r["sampler"],
        **r["options"],
    )
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    scale = float(np.max(np.abs(a["out"])))
    np.testing.assert_allclose(got.numpy(), a["out"], rtol=0, atol=1e-4 * scale)


def test_another_seed_differs_and_bad_input():
    r, a = next(c for c in CASES if c[0]["sampler"] == "lcm")
    args = (toy(r["toy"], a["mu"]), r["seed"] + 1, torch.from_numpy(a["latent"]), a["sigmas"])
    assert not np.allclose(iterative_mixing_sample_torch(*args, sampler="lcm").numpy(), a["out"], atol=1e-3)
    with pytest.raises(ValueError, match="iterative_mixing_sample_torch: latent must be a torch.Tensor"):
        iterative_mixing_sample_torch(args[0], 0, a["latent"], a["sigmas"])
    with pytest.raises(ValueError, match="iterative_mixing_sample_torch: unknown sampler 'dpm_3'"):
        iterative_mixing_sample_torch(*args, sampler="dpm_3")
