"""ComfyUI `.latent` files: LoadLatent's reading rules and the streaming writer's safetensors layout."""

import io
import json
import os
import stat
import warnings

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as stn
from safetensors import safe_open

import jax_unsampler as ju
from jax_unsampler.latent_file import LEGACY_SCALE, LatentWriter, atomic_path

MARKER = {"latent_format_version_0": np.zeros((0,), np.float32)}


def _latent(shape=(2, 4, 5, 6), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_streamed_file_is_byte_identical_to_the_safetensors_library():
    x = _latent((5, 4, 3, 2))
    expected = stn.save({"latent_tensor": x, **MARKER}, metadata={"seed": "7"})
    out = io.BytesIO()
    writer = LatentWriter(out, x.shape, {"seed": "7"})
    for part in (x[:2], x[2:3], x[3:]):
        writer.write(part)
    writer.finish()
    assert out.getvalue() == expected


def test_save_latent_reads_back_with_safe_open(tmp_path):
    x = _latent()
    meta = {"model": "sd15", "seed": "18446744073709551615", "note": "ünïcode"}
    path = tmp_path / "a.latent"
    ju.save_latent(path, x, meta)
    with safe_open(str(path), framework="numpy") as f:
        assert sorted(f.keys()) == ["latent_format_version_0", "latent_tensor"]
        assert f.metadata() == meta
        assert f.get_tensor("latent_format_version_0").shape == (0,)
        got = f.get_tensor("latent_tensor")
    assert got.dtype == np.float32 and np.array_equal(got, x)
    assert np.array_equal(stn.load_file(str(path))["latent_tensor"], x)
    assert sorted(os.listdir(tmp_path)) == ["a.latent"]


def test_empty_batch_round_trips(tmp_path):
    path = tmp_path / "empty.latent"
    ju.save_latent(path, np.zeros((0, 4, 8, 8), np.float32))
    assert ju.load_latent(path).shape == (0, 4, 8, 8)


def test_marked_file_is_read_as_is(tmp_path):
    x = _latent()
    stn.save_file({"latent_tensor": x, **MARKER}, str(tmp_path / "m.latent"), metadata={"prompt": "{}"})
    assert np.array_equal(ju.load_latent(tmp_path / "m.latent"), x)


def test_unmarked_file_gets_loadlatents_legacy_factor(tmp_path):
    x = _latent()
    stn.save_file({"latent_tensor": x}, str(tmp_path / "old.latent"))
    got = ju.load_latent(tmp_path / "old.latent")
    assert np.array_equal(got, x * np.float32(LEGACY_SCALE))  # float32 multiply, as torch does
    np.testing.assert_allclose(got, x / 0.18215, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_other_float_types_become_float32(tmp_path, dtype):
    x = _latent().astype(dtype)
    stn.save_file({"latent_tensor": x, **MARKER}, str(tmp_path / "h.safetensors"))
    got = ju.load_latent(tmp_path / "h.safetensors")
    assert got.dtype == np.float32 and np.array_equal(got, x.astype(np.float32))


def test_npy_is_read_as_is(tmp_path):
    x = _latent()
    np.save(tmp_path / "x.npy", x)
    assert np.array_equal(ju.load_latent(tmp_path / "x.npy"), x)


def _full(value):
    return np.full((1, 4, 2, 2), value, np.float32)


GOOD = stn.save({"latent_tensor": _latent(), **MARKER})
BAD_FILES = {  # name: (content, what the message says); None: no file at all
    "missing.latent": (None, "no such file"),
    "junk.latent": (b"\x00not a safetensors file at all", "not a readable safetensors file"),
    "cut.latent": (GOOD[:-7], "not a readable safetensors file"),
    "other.latent": (stn.save({"samples": _latent()}), "no 'latent_tensor' tensor in the file"),
    "nan.latent": (stn.save({"latent_tensor": _full(np.nan)}), "NaN or infinite"),
    "inf.safetensors": (stn.save({"latent_tensor": _full(-np.inf), **MARKER}), "NaN or infinite"),
    "junk.npy": (b"\x93NUMPY garbage", "not a readable .npy file"),
    "x.png": (b"png", "unsupported file type '.png'"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_raise_one_line_value_errors_naming_the_file(tmp_path, name):
    content, message = BAD_FILES[name]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        ju.load_latent(tmp_path / name)
    assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_npy_with_objects_or_strings_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable .npy"):
        ju.load_latent(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="not real numbers"):
        ju.load_latent(tmp_path / "str.npy")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_removes_its_temporary_file_and_keeps_the_old_one(tmp_path, error):
    target = tmp_path / "out.latent"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise error
    assert sorted(os.listdir(tmp_path)) == ["out.latent"] and target.read_bytes() == b"old"


def test_writer_refuses_wrong_or_missing_entries():
    writer = LatentWriter(io.BytesIO(), (3, 4, 2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        writer.write(np.zeros((1, 4, 2, 3), np.float32))
    writer.write(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        writer.write(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="2 of 3 entries"):
        writer.finish()


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(ValueError, match="str to str"):
        ju.save_latent(tmp_path / "m.latent", _latent(), {"seed": 3})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dtype", [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2])
def test_float8_latents_are_read_with_ml_dtypes(tmp_path, dtype):
    x = _latent().astype(dtype)
    stn.save_file({"latent_tensor": x, **MARKER}, str(tmp_path / "f8.latent"))
    got = ju.load_latent(tmp_path / "f8.latent")
    assert got.dtype == np.float32 and np.array_equal(got, x.astype(np.float32))


def _raw_safetensors(path, dtype, shape, nbytes):
    header = json.dumps({"latent_tensor": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(nbytes))


@pytest.mark.parametrize("dtype", ["F4", "F6_E2M3", "F8_E8M0"])
def test_unreadable_dtypes_are_named(tmp_path, dtype):
    _raw_safetensors(tmp_path / "q.latent", dtype, [1, 4, 2, 2], 8)
    with pytest.raises(ValueError, match=f"q.latent: the latent holds {dtype} values, which cannot be read"):
        ju.load_latent(tmp_path / "q.latent")


def test_float64_beyond_float32_is_refused_quietly(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[1.0, -1e40]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"float64 values up to 1e\+40, beyond float32's range"):
            ju.load_latent(tmp_path / "big.npy")


@pytest.mark.parametrize("bad", [b"x.latent", stn.save({"latent_tensor": _latent()}), None, 3])
def test_load_latent_says_to_pass_a_path(bad):
    with pytest.raises(ValueError, match=r"load_latent: path must be a file name \(str or pathlib.Path\)"):
        ju.load_latent(bad)


def test_atomic_write_keeps_mode_and_refuses_links(tmp_path):
    path = tmp_path / "a.latent"
    ju.save_latent(path, _latent())
    path.chmod(0o640)
    ju.save_latent(path, _latent(seed=1))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    (tmp_path / "link.latent").symlink_to(path)
    with pytest.raises(ValueError, match="is a symbolic link"):
        ju.save_latent(tmp_path / "link.latent", _latent())
    assert (tmp_path / "link.latent").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["a.latent", "link.latent"]
