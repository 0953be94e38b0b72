"""to_jax / to_torch and the LATENT dict helpers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_bridge as tb


def test_contiguous_cpu_tensor_is_shared_not_copied():
    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    a = tb.to_jax(t)
    assert a.unsafe_buffer_pointer() == t.data_ptr()
    assert a.dtype == jnp.float32 and a.shape == (2, 3, 4)
    back = tb.to_torch(a)
    assert back.data_ptr() == t.data_ptr()
    assert torch.equal(back, t)


@pytest.mark.parametrize(
    "dtype, jdtype",
    [(torch.float32, jnp.float32), (torch.float16, jnp.float16), (torch.bfloat16, jnp.bfloat16)],
)
def test_dtypes_are_kept_both_ways(dtype, jdtype):
    values = [[0.5, -1.25, 3.0], [1024.0, -0.0078125, 7.5]]  # exact in every dtype
    t = torch.tensor(values, dtype=dtype)
    a = tb.to_jax(t)
    assert a.dtype == jdtype
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.array(values, np.float32))
    back = tb.to_torch(a)
    assert back.dtype == dtype
    assert torch.equal(back, t)


def test_non_contiguous_tensors_are_copied_with_the_right_values():
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    for view in (base.transpose(0, 2), base[:, ::2, 1:], base[..., ::3]):
        assert not view.is_contiguous()
        a = tb.to_jax(view)
        assert a.shape == tuple(view.shape)
        np.testing.assert_array_equal(np.asarray(a), view.numpy())


def test_non_contiguous_bfloat16_and_grad_tensors():
    t = torch.linspace(-2, 2, 12, dtype=torch.bfloat16).reshape(3, 4).T
    a = tb.to_jax(t)
    assert a.dtype == jnp.bfloat16
    assert torch.equal(tb.to_torch(a), t)
    g = torch.ones(3, requires_grad=True) * 2
    np.testing.assert_array_equal(np.asarray(tb.to_jax(g)), [2.0, 2.0, 2.0])


def test_to_torch_copies_numpy_bfloat16_and_moves_devices():
    a = np.asarray(jnp.array([1.5, -2.0], jnp.bfloat16))  # a NumPy (ml_dtypes) bfloat16 array
    t = tb.to_torch(a, device="cpu")
    assert t.dtype == torch.bfloat16
    assert t.tolist() == [1.5, -2.0]


def test_to_jax_rejects_non_tensors():
    with pytest.raises(ValueError, match="to_jax: expected a torch.Tensor, got list"):
        tb.to_jax([1.0])


def _latent(batch=2):
    return {
        "samples": torch.zeros(batch, 4, 2, 2),
        "noise_mask": torch.ones(batch, 1, 2, 2) * torch.arange(batch).view(-1, 1, 1, 1),
        "batch_index": [3, 7][:batch] if batch <= 2 else list(range(batch)),
        "type": "audio",
        "my_custom_key": {"kept": True},
    }


def test_latent_with_samples_copies_the_dict_and_keeps_unknown_keys():
    latent = _latent()
    out = tb.latent_with_samples(latent, jnp.ones((6, 4, 2, 2)))
    assert out is not latent
    assert latent["samples"].shape == (2, 4, 2, 2)  # the input is untouched
    assert latent["batch_index"] == [3, 7]
    assert isinstance(out["samples"], torch.Tensor) and out["samples"].shape == (6, 4, 2, 2)
    assert out["type"] == "audio"
    assert out["my_custom_key"] is latent["my_custom_key"]


def test_batch_index_expands_as_repeat_latent_batch():
    out = tb.latent_with_samples(_latent(), torch.ones(6, 4, 2, 2))
    # RepeatLatentBatch with amount 3 on [3, 7]: offset = 7 - 3 + 1 = 5.
    assert out["batch_index"] == [3, 7, 8, 12, 13, 17]


def test_noise_mask_is_tiled_per_item():
    out = tb.latent_with_samples(_latent(), torch.ones(6, 4, 2, 2))
    assert out["noise_mask"].shape == (6, 1, 2, 2)
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]


def test_single_mask_is_kept_and_short_mask_batches_are_cycled():
    latent = {"samples": torch.zeros(3, 4, 2, 2), "noise_mask": torch.full((1, 1, 2, 2), 0.5)}
    out = tb.latent_with_samples(latent, torch.ones(6, 4, 2, 2))
    assert out["noise_mask"] is latent["noise_mask"]
    latent["noise_mask"] = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    out = tb.latent_with_samples(latent, torch.ones(6, 4, 2, 2))
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [0, 1, 0, 0, 1, 0]


def test_empty_result_and_5d_latents():
    latent = {
        "samples": torch.zeros(1, 16, 3, 4, 4),
        "batch_index": [0],
        "noise_mask": torch.ones(2, 1, 4, 4),
    }
    out = tb.latent_with_samples(latent, torch.zeros(0, 16, 3, 4, 4))
    assert out["samples"].shape == (0, 16, 3, 4, 4)
    assert out["batch_index"] == []
    assert out["noise_mask"].shape[0] == 0


def test_latent_errors_are_clear():
    with pytest.raises(
        ValueError, match=r"latent_with_samples: the LATENT has no 'samples' tensor \(its keys: 'x'\)"
    ):
        tb.latent_with_samples({"x": 1}, torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="not a multiple of the LATENT's batch size 2"):
        tb.latent_with_samples(_latent(), torch.zeros(3, 4, 2, 2))
    with pytest.raises(ValueError, match="do not match the LATENT's items"):
        tb.latent_with_samples(_latent(), torch.zeros(2, 4, 2, 3))
    with pytest.raises(ValueError, match="latent_to_jax: expected a LATENT dict"):
        tb.latent_to_jax(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="must be float32, float16 or bfloat16, got torch.int64"):
        tb.latent_to_jax({"samples": torch.zeros(1, 4, dtype=torch.int64)})


def test_latent_to_jax_shares_the_samples():
    latent = _latent()
    a = tb.latent_to_jax(latent)
    assert a.unsafe_buffer_pointer() == latent["samples"].data_ptr()
