"""The torch functions keep the JAX functions' contract (issue 22): the same checks and words,
made before anything is drawn; and `mixing_sample_torch` (a torch denoiser, the package's steps
run in torch) equals the JAX loop given the same draws."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_bridge as tb

MU, S = 0.3, 0.8


def den_torch(x, sigma):
    sig = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    return MU + S**2 / (S**2 + sig**2) * (x - MU) + 0.05 * torch.sin(3 * x) * sig / (1 + sig)


def den_jax(x, sigma):
    sig = jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1))
    return MU + S**2 / (S**2 + sig**2) * (x - MU) + 0.05 * jnp.sin(3 * x) * sig / (1 + sig)


def _latent(shape=(2, 3, 4, 4)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.7


SIGMAS = [8.0, 4.0, 2.0, 1.0, 0.5, 0.2, 0.0]


@pytest.mark.parametrize(
    "latent, sigmas, match",
    [
        (torch.ones((2, 3), dtype=torch.int64), [0.0, 1.0], "latent must be floating point"),
        (torch.full((2, 3), float("nan")), [0.0, 1.0], "latent contains NaN or infinite values"),
        (_latent(), [0.0, float("inf")], "sigmas contain NaN or infinite values"),
        (_latent(), [[0.0, 1.0]], r"sigmas must be 1-D, got shape \(1, 2\)"),
        (_latent(), "abc", "sigmas must be a 1-D array of numbers, got str"),
        (np.ones((2, 3), np.float32), [0.0, 1.0], "latent must be a torch.Tensor, got ndarray"),
        (torch.tensor(1.0), [0.0, 1.0], r"latent must have a batch axis and at least 1 more \(rank >= 2\)"),
    ],
)
def test_inverted_latents_torch_checks_as_the_jax_function(latent, sigmas, match):
    with pytest.raises(ValueError, match="^inverted_latents_torch: " + match):
        tb.inverted_latents_torch(den_torch, latent, sigmas)


def test_inverted_latents_torch_empty_sigmas_give_no_rows():
    assert tb.inverted_latents_torch(den_torch, _latent(), []).shape == (0, 3, 4, 4)


@pytest.mark.parametrize("fn", [tb.iterative_mixing_sample_torch, tb.mixing_sample_torch])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent": torch.tensor(1.0)}, r"latent must have a batch axis"),
        ({"latent": torch.full((1, 2, 2), float("nan"))}, "latent contains NaN"),
        ({"sampler": "dpm_3"}, "unknown sampler 'dpm_3'"),
        ({"sigmas": [0.0, 1.0]}, "sigmas must be descending"),
        ({"alpha_1": float("nan")}, "alpha_1 must be a finite number"),
        ({"seed": -1}, r"seed must be an integer in \[0, 18446744073709551615\]"),
    ],
)
def test_mixing_functions_check_first_and_name_themselves(fn, kwargs, match, monkeypatch):
    args = {"latent": _latent(), "sigmas": SIGMAS, "seed": 0, **kwargs}
    latent, sigmas, seed = args.pop("latent"), args.pop("sigmas"), args.pop("seed")
    den = den_jax if fn is tb.iterative_mixing_sample_torch else den_torch
    draws = []
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: draws.append(a) or real_randn(*a, **k))
    with pytest.raises(ValueError, match=f"^{fn.__name__}: {match}"):
        if fn is tb.iterative_mixing_sample_torch:
            fn(den, seed, latent, sigmas, **args)
        else:
            fn(den, latent, sigmas, seed=seed, **args)
    assert draws == []  # refused before anything was drawn


@pytest.mark.parametrize(
    "settings",
    [
        {"sampler": "euler"},
        {"sampler": "heun", "blending_function": "slerp"},
        {"sampler": "dpmpp_2m", "blending_function": "norm_only", "blending_schedule": "logistic"},
        {"sampler": "lcm", "blending_schedule": "linear"},
        {"sampler": "euler", "rewind": True, "rewind_min": 0.3, "rewind_max": 0.9, "normalize_on_mean": True},
        {"sampler": "lcm", "rewind": True, "rewind_min": 0.4, "rewind_max": 0.9},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_torch_denoiser_mixing_equals_the_jax_loop_with_the_same_draws(settings):
    latent = _latent()
    want = tb.iterative_mixing_sample_torch(den_jax, 5, latent, SIGMAS, **settings)
    got = tb.mixing_sample_torch(den_torch, latent, SIGMAS, seed=5, **settings)
    # The same steps and draws; torch and XLA round a few operations differently (fused
    # multiply-adds, reductions): a few float32 ulps a step over 6 steps.
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_mixing_sample_torch_takes_a_given_batch_and_reports_progress():
    latent = _latent((1, 4, 4, 4))
    sig = torch.tensor(SIGMAS)
    noised = latent.repeat(len(SIGMAS), 1, 1, 1) + torch.randn(len(SIGMAS), 4, 4, 4) * sig.reshape(
        -1, 1, 1, 1
    )
    seen = []
    out = tb.mixing_sample_torch(
        den_torch, latent, sig, seed=0, noised=noised, callback=lambda i, *a: seen.append(i)
    )
    assert seen == list(range(len(SIGMAS) - 1)) and out.shape == latent.shape
    with pytest.raises(ValueError, match="^mixing_sample_torch: noised is in the other order"):
        tb.mixing_sample_torch(den_torch, latent, sig, seed=0, noised=noised.flip(0))
