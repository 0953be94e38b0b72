"""Flax NNX, Linen and Equinox models as denoisers: trained for a few steps in the test on data
made here, then used to sample, mix and invert; new parameters give new results and compile
nothing (the pytree path of the denoiser rule, docs/denoisers.md)."""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_sampler_contract import _compiles

import jax_unsampler as ju

SHAPE = (2, 4)  # (B, features): a latent of rank 2
X = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
DOWN = np.array([6.0, 2.0, 0.6, 0.0], np.float32)
DATA = (np.random.default_rng(1).standard_normal((64, 4)) * 0.5 + 1.0).astype(np.float32)

USES = {
    "sample": lambda d: ju.sample(d, X, DOWN, sampler="heun"),
    "mixing": lambda d: ju.iterative_mixing_sample(d, X, DOWN, key=jax.random.key(0)),
    "inversion": lambda d: ju.inverted_latents(d, X, DOWN[::-1].copy(), sampler="dpmpp_2m"),
}


def _noisy_batch(i):
    rng = np.random.default_rng(100 + i)
    sigma = np.exp(rng.uniform(-2, 2, (DATA.shape[0],))).astype(np.float32)
    return DATA + sigma[:, None] * rng.standard_normal(DATA.shape).astype(np.float32), sigma


def _check_trained(denoisers):
    """`denoisers`: the model after each training chunk; each use gives a new result each time,
    and after the first chunk none compiles."""
    for use, run in USES.items():
        outs = [np.asarray(run(denoisers[0]))]
        for d in denoisers[1:]:
            assert _compiles(lambda d=d, run=run: jax.block_until_ready(run(d))) == 0, use
            outs.append(np.asarray(run(d)))
        assert all(np.isfinite(o).all() for o in outs)
        assert len({o.tobytes() for o in outs}) == len(outs), f"{use}: a training chunk changed nothing"


class _NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(5, 16, rngs=rngs)
        self.b = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x, sigma):  # an EDM-style x0 prediction from (x, log sigma)
        h = jnp.concatenate([x / jnp.sqrt(1 + sigma[:, None] ** 2), jnp.log(sigma)[:, None] / 4], axis=1)
        return self.b(jax.nn.gelu(self.a(h)))


def test_a_flax_nnx_module_trained_between_calls():
    model = _NNXNet(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train(model, opt, x, sigma):
        loss = lambda m: jnp.mean((m(x, sigma) - DATA) ** 2)  # noqa: E731
        opt.update(model, nnx.grad(loss)(model))

    snapshots = []
    for chunk in range(3):
        for i in range(5):
            train(model, opt, *_noisy_batch(10 * chunk + i))
        snapshots.append(nnx.clone(model))
    _check_trained(snapshots)
    # The module itself, in place (a notebook's global model), is read at every call too:
    first = np.asarray(USES["sample"](model))
    train(model, opt, *_noisy_batch(99))
    assert _compiles(lambda: jax.block_until_ready(USES["sample"](model))) == 0
    assert not np.array_equal(first, np.asarray(USES["sample"](model)))
    # ... and through a closure (the trace path): new values, no new program either.
    closure = lambda x, s: model(x, s)  # noqa: E731
    a = np.asarray(USES["sample"](closure))
    train(model, opt, *_noisy_batch(98))
    assert _compiles(lambda: jax.block_until_ready(USES["sample"](closure))) == 0
    assert not np.array_equal(a, np.asarray(USES["sample"](closure)))


class _BN(nnx.Module):
    def __init__(self, rngs):
        self.bn = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x, sigma):
        return self.bn(x)


@pytest.mark.parametrize("form", ["module", "closure"])
def test_an_nnx_module_that_updates_its_state_is_refused(form):
    model = _BN(nnx.Rngs(0))
    d = model if form == "module" else (lambda x, s: model(x, s))
    with pytest.raises(
        ValueError, match=r"^sample: the denoiser \(a Flax NNX module\) updates its own nnx\.Variable"
    ):
        USES["sample"](d)
    model.eval()
    assert np.isfinite(np.asarray(USES["sample"](d))).all()


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, t[:, None] / 1000.0], axis=1)
        return nn.Dense(4)(nn.gelu(nn.Dense(16)(h)))


def test_a_linen_module_with_its_params():
    net = _LinenNet()
    ms = ju.model_sampling("EPS")
    params = net.init(jax.random.key(0), jnp.ones(SHAPE), jnp.ones((2,)))
    tx = optax.adam(1e-2)
    state = tx.init(params)
    den = lambda p: ju.denoiser_from_model(net.apply, ms, params=p)  # noqa: E731

    @jax.jit
    def train(params, state, x, sigma):
        loss = lambda p: jnp.mean((den(p)(x, sigma) - DATA) ** 2)  # noqa: E731
        updates, state = tx.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    snapshots = []
    for chunk in range(3):
        for i in range(5):
            params, state = train(params, state, *_noisy_batch(10 * chunk + i))
        snapshots.append(den(params))
    _check_trained(snapshots)


class _EqxNet(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(5, 4, 16, 2, key=key)

    def __call__(self, x, sigma):
        h = jnp.concatenate([x / jnp.sqrt(1 + sigma[:, None] ** 2), jnp.log(sigma)[:, None] / 4], axis=1)
        return jax.vmap(self.mlp)(h)


def test_an_equinox_module():
    model = _EqxNet(jax.random.key(0))
    tx = optax.adam(1e-2)
    state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def train(model, state, x, sigma):
        loss = lambda m: jnp.mean((m(x, sigma) - DATA) ** 2)  # noqa: E731
        grads = eqx.filter_grad(loss)(model)
        updates, state = tx.update(grads, state)
        return eqx.apply_updates(model, updates), state

    snapshots = []
    for chunk in range(3):
        for i in range(5):
            model, state = train(model, state, *_noisy_batch(10 * chunk + i))
        snapshots.append(model)
    _check_trained(snapshots)
