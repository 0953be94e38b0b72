"""Invert a latent to noise and sample it back: the ODE round trip in one call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._denoiser_args import Denoiser
from ._latent_format import LatentFormat
from ._names import INVERSION_SAMPLERS
from ._validation import check_choice, check_latent, check_sigmas


class RoundTrip(NamedTuple):
    """What `round_trip` returns."""

    noise: jax.Array
    """The latent carried up the ODE to `sigmas[0]`: `(B, ...)`, what sampling starts from."""
    reconstruction: jax.Array
    """That noise sampled back down the same sigmas with the same sampler: `(B, ...)`."""


def round_trip(
    denoiser: Denoiser,
    latent: ArrayLike,
    sigmas: ArrayLike,
    *,
    sampler: str = "euler",
    latent_format: LatentFormat | None = None,
    options: Mapping[str, Any] | None = None,
) -> RoundTrip:
    """Invert `latent` along `sigmas`, then sample the result back: `(noise, reconstruction)`.

    `sigmas` is a sampling schedule (descending, ending in 0, e.g. `ksampler_sigmas(...)`).
    The latent is carried up the probability-flow ODE along the same sigmas reversed
    (`inverted_latents(denoiser, latent, sigmas[::-1])`, whose last entry is the noisiest),
    then `sample(denoiser, noise, sigmas)` brings it back. With an exact ODE solver the
    reconstruction is the latent; its error is the sampler's discretisation error (and the
    first step's evaluation at `INVERSION_ZERO_SIGMA`), which falls with the step count at
    the sampler's order (docs/inversion.md gives figures).

    **Arguments:**

    - `denoiser`: `D(x, sigma)`, as for `sample` (see the denoiser rule in docs/denoisers.md).
    - `latent`: the `(B, ...)` clean latent.
    - `sigmas`: descending, non-negative, ending in 0 (at least two entries).
    - `sampler`: one of `INVERSION_SAMPLERS` (deterministic, along the given sigmas).
    - `latent_format`, `options`: as for `inverted_latents` and `sample`.

    **Returns:** a `RoundTrip` `(noise, reconstruction)`, both in the latent's dtype.
    """
    from ._inversion import inverted_latents
    from ._samplers import sample

    fn = "round_trip"
    sampler = check_choice(fn, "sampler", sampler, INVERSION_SAMPLERS)
    x = check_latent(fn, latent)
    s = check_sigmas(fn, sigmas, order="descending", min_len=2)
    if not isinstance(s, jax.core.Tracer) and float(np.asarray(s)[-1]) != 0.0:
        raise ValueError(
            f"{fn}: sigmas must end in 0 (a full schedule: the reconstruction is the clean "
            f"latent), got a last sigma of {float(np.asarray(s)[-1])}"
        )
    up = inverted_latents(denoiser, x, s[::-1], sampler=sampler, latent_format=latent_format, options=options)
    noise = up[-x.shape[0] :]
    back = sample(denoiser, noise, s, sampler=sampler, latent_format=latent_format, options=options)
    return RoundTrip(noise, jnp.asarray(back, x.dtype))
