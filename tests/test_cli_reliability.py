"""The command under hostile conditions: odd output targets, signals, full disks, huge headers.

Every test here is a regression test of issue 14: each failed on the code before it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from conftest import quick_subset
from safetensors import safe_open

from jax_unsampler import latent_file
from jax_unsampler.app import _cli
from jax_unsampler.app._cli import main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


def run(capsys, *argv):
    code = main(
        [a if isinstance(a, str) else os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
    )
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, message):
    assert (code, out) == (2, ""), err
    assert err.startswith("jax-unsampler: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err, err


# --- output targets -------------------------------------------------------------------------------


def _make_target(d: Path, kind: str) -> tuple[Path, Callable[[], bool]]:
    """An `--out` target of `kind` and a check that it is untouched."""
    if kind == "symlink":
        (d / "real.latent").write_bytes(b"kept")
        (d / "o.latent").symlink_to(d / "real.latent")
        return (
            d / "o.latent",
            lambda: (d / "o.latent").is_symlink() and (d / "real.latent").read_bytes() == b"kept",
        )
    if kind == "fifo":
        os.mkfifo(d / "o.latent")
        return d / "o.latent", lambda: stat.S_ISFIFO(os.lstat(d / "o.latent").st_mode)
    (d / "o.latent").write_bytes(b"kept")
    os.link(d / "o.latent", d / "other-name.latent")
    return (
        d / "o.latent",
        lambda: os.stat(d / "o.latent").st_nlink == 2 and (d / "other-name.latent").read_bytes() == b"kept",
    )


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("symlink", "is a symbolic link"),
        ("fifo", "is a FIFO, not a regular file"),
        ("hardlink", "has 2 hard links; replacing it would break them"),
    ],
)
@pytest.mark.parametrize("flag", ["--out", "--preview"])
def test_non_regular_or_linked_targets_are_refused_and_kept(tmp_path, capsys, kind, message, flag):
    target, untouched = _make_target(tmp_path, kind)
    before = sorted(os.listdir(tmp_path))
    outputs = ["--out", target] if flag == "--out" else ["--out", tmp_path / "x.latent", "--preview", target]
    code, out, err = run(capsys, "unsample", "--steps", 2, *outputs)
    assert_one_line_error(code, out, err, f"{flag}: {target}: {message}")
    assert untouched() and sorted(os.listdir(tmp_path)) == before


def test_replaced_output_keeps_its_mode(tmp_path, capsys):
    out = tmp_path / "o.latent"
    out.write_bytes(b"earlier")
    out.chmod(0o600)
    assert run(capsys, "unsample", "--steps", 2, "--out", out)[0] == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and out.read_bytes() != b"earlier"


@pytest.mark.parametrize("flag", ["--out", "--preview", "--stats"])
def test_no_output_may_be_the_input(tmp_path, capsys, flag):
    source = tmp_path / "in.npy"
    np.save(source, np.zeros((1, 4, 8, 8), np.float32))
    content = source.read_bytes()
    (tmp_path / "sub").mkdir()
    spelled = tmp_path / "sub" / ".." / "in.npy"  # the same file, another spelling
    outputs = {"--out": tmp_path / "o.latent", "--preview": None, "--stats": None, flag: spelled}
    argv = [a for f, p in outputs.items() if p is not None for a in (f, p)]
    code, out, err = run(capsys, "unsample", source, "--steps", 2, *argv)
    assert_one_line_error(code, out, err, f"{flag}: {spelled} is INPUT")
    assert source.read_bytes() == content and sorted(os.listdir(tmp_path)) == ["in.npy", "sub"]


def test_outputs_through_a_linked_directory_are_still_one_file(tmp_path, capsys):
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    code, out, err = run(
        capsys, "unsample", "--out", tmp_path / "o.latent", "--preview", tmp_path / "alias" / "o.latent"
    )
    assert_one_line_error(code, out, err, "--out and --preview must be different files")
    assert sorted(os.listdir(tmp_path)) == ["alias"]


# --- signals ------------------------------------------------------------------------------------------


def _start_long_run(d: Path) -> subprocess.Popen:
    """A run long enough to be caught mid-stream (160 MB in chunks of 50 steps), once its
    temporary file exists (by then the signal handlers are in place)."""
    command = [sys.executable, "-m", "jax_unsampler", "unsample", "--steps", "10000", "--chunk-steps", "50",
               "--out", "o.latent"]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=d, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not any(n.endswith(".tmp") for n in os.listdir(d)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the run ended or stalled before writing: {proc.returncode} {err}")
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("signum", quick_subset([signal.SIGTERM, signal.SIGHUP], 2))
def test_terminating_signals_clean_up_and_exit_128_plus_n(tmp_path, signum):
    # `timeout` sends SIGTERM; a closed terminal sends SIGHUP.
    proc = _start_long_run(tmp_path)
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum
    assert err == f"jax-unsampler: terminated by {signal.Signals(signum).name}\n" and out == ""
    assert os.listdir(tmp_path) == []


def test_files_left_by_a_killed_run_are_removed_by_the_next(tmp_path, capsys):
    proc = _start_long_run(tmp_path)
    try:
        proc.kill()  # SIGKILL: no handler runs, the temporary file stays
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (stale,) = os.listdir(tmp_path)
    assert stale.startswith(f".o.latent.jax-unsampler-{proc.pid}.") and stale.endswith(".tmp")
    live = f".o.latent.jax-unsampler-{os.getpid()}.abcdefgh.tmp"  # a run in progress: kept
    foreign = ".o.latent.abcdefgh.tmp"  # not our pattern: kept
    for name in (live, foreign):
        (tmp_path / name).write_bytes(b"")
    code, _, err = run(capsys, "unsample", "--steps", 2, "--out", tmp_path / "o.latent")
    assert code == 0
    assert err == f"jax-unsampler: removed {tmp_path / stale}, left by an earlier run that was killed\n"
    assert sorted(os.listdir(tmp_path)) == sorted([live, foreign, "o.latent"])


# --- disk space and write errors ------------------------------------------------------------------


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_free_space_is_checked_up_front_with_the_exact_size(tmp_path, capsys, monkeypatch):
    assert run(capsys, "unsample", "--steps", 7, "--out", tmp_path / "ok.latent")[0] == 0
    size = os.path.getsize(tmp_path / "ok.latent")
    monkeypatch.setattr(_cli.shutil, "disk_usage", lambda path: _Usage(10**9, 10**9 - 999, 999))
    monkeypatch.setattr(_cli, "noised_latents_chunks", lambda *a, **k: pytest.fail("worked before checking"))
    code, out, err = run(capsys, "unsample", "--steps", 7, "--out", tmp_path / "o.latent")
    assert_one_line_error(code, out, err, f"--out: {tmp_path / 'o.latent'} needs {size / 1000:.1f} kB "
                          f"({size:,} bytes) but only 999 bytes is free")  # fmt: skip
    assert os.listdir(tmp_path) == ["ok.latent"]


def test_disk_full_names_the_file(tmp_path, capsys, monkeypatch):
    class FullDisk(latent_file.LatentWriter):
        def write(self, chunk):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as file.write raises it: no name

    monkeypatch.setattr(_cli, "LatentWriter", FullDisk)
    code, out, err = run(capsys, "unsample", "--steps", 2, "--out", tmp_path / "o.latent")
    assert_one_line_error(code, out, err, f"{tmp_path / 'o.latent'}: No space left on device")
    assert os.listdir(tmp_path) == []


def test_file_size_limit_names_the_file(tmp_path):
    # A real EFBIG: the process may write at most 64 kB per file; the batch is 320 kB.
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
        "from jax_unsampler.app import main; "
        "raise SystemExit(main(['unsample', '--steps', '20', '--out', 'o.latent']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("jax-unsampler: error: o.latent: File too large")
    assert os.listdir(tmp_path) == []


# --- inputs -------------------------------------------------------------------------------------------


def test_npy_header_declaring_a_huge_array_is_refused(tmp_path, capsys):
    path = tmp_path / "huge.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (1, 4, 100000, 100000)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    code, out, err = run(capsys, "unsample", path, "--out", tmp_path / "o.latent")
    message = ("huge.npy: not a readable .npy file (its header declares shape (1, 4, 100000, 100000), "
               "160.0 GB (160,000,000,000 bytes) of data, but the file holds 64 bytes)")  # fmt: skip
    assert_one_line_error(code, out, err, message)


def test_latent_larger_than_memory_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    # A sparse file whose header honestly declares 400 MB of float32, with 100 MB "available".
    shape = [1, 4, 5000, 5000]
    header = json.dumps({"latent_tensor": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * 10**8]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    path = tmp_path / "big.latent"
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + 4 * 10**8)
    monkeypatch.setattr(latent_file, "available_memory", lambda: 10**8)
    code, out, err = run(capsys, "unsample", path, "--out", tmp_path / "o.latent")
    message = ("big.latent: a latent of shape (1, 4, 5000, 5000) needs 800.0 MB (800,000,000 bytes) of "
               "memory to load, but only 100.0 MB (100,000,000 bytes) is available")  # fmt: skip
    assert_one_line_error(code, out, err, message)


@pytest.mark.parametrize(("kind", "message"), [("directory", "is a directory"), ("fifo", "is a FIFO"),
                                               ("device", "is a device")])  # fmt: skip
def test_input_that_is_not_a_regular_file_says_what_it_is(tmp_path, capsys, kind, message):
    path = tmp_path / "in.npy"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/null")
    code, out, err = run(capsys, "unsample", path, "--out", tmp_path / "o.latent")
    assert_one_line_error(code, out, err, f"{path}: {message}")


def test_non_utf8_file_names(tmp_path, capsys):
    name = os.fsdecode(b"caf\xe9.npy")  # Latin-1, not UTF-8: a surrogate escape in Python
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / name, x)
    code, _, err = run(capsys, "unsample", tmp_path / name, "--steps", 2, "--out", tmp_path / "o.latent")
    assert (code, err) == (0, "")
    with safe_open(str(tmp_path / "o.latent"), framework="numpy") as f:
        assert f.metadata()["input"] == str(tmp_path / "caf\\xe9.npy")
    missing = tmp_path / os.fsdecode(b"\xff.npy")
    code, out, err = run(capsys, "unsample", missing, "--out", tmp_path / "p.latent")
    assert_one_line_error(code, out, err, f"{tmp_path}/\\xff.npy: no such file")


def test_float64_beyond_float32_is_refused_without_a_numpy_warning(tmp_path, capsys):
    path = tmp_path / "big.npy"
    np.save(path, np.full((1, 4, 4, 4), 1e300))
    with np.errstate(all="raise"):
        code, out, err = run(capsys, "unsample", path, "--out", tmp_path / "o.latent")
    assert_one_line_error(code, out, err, "big.npy: the latent holds float64 values up to 1e+300, beyond "
                          "float32's range (largest 3.403e+38)")  # fmt: skip
