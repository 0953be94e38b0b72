"""The command under the fourth hostile probe (issue 29): each test failed on the code before it.

Device counts beyond the machine, float32 overflow in the output and in a legacy input, cache
folders that cannot be locked, JAX's own cache variable, cache folders left by a failed run, a
closed pipe, and arguments checked before JAX is imported.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy as np
import pytest
from safetensors.numpy import save_file

from jax_unsampler import _compilation_cache, latent_file
from jax_unsampler.app import _cli
from jax_unsampler.app._cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_UNSAMPLER_", "JAX_COMPILATION"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu")
    env.update(extra)
    return env


def _command(*argv: object, **env: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "jax_unsampler", *map(str, argv)]
    return subprocess.run(args, env=_env(**env), capture_output=True, text=True, timeout=300, cwd=ROOT)


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *parts: str) -> None:
    assert (code, out) == (2, ""), err
    assert err.startswith("jax-unsampler: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for part in parts:
        assert part in err, err


# --- 2: --devices beyond what the machine runs -----------------------------------------------------


def test_more_devices_than_the_machine_runs_is_one_line(tmp_path, capsys):
    """`--devices 512` on two cores was accepted, ran 100 s into XLA's rendezvous timeout and an
    abort, leaving a temporary file: now refused at once, above DEVICES_PER_CORE per core."""
    most = _cli.max_devices()
    assert 1 <= most <= _cli.MAX_DEVICES and most <= _cli.DEVICES_PER_CORE * _cli.cpu_cores()
    code, out, err = run(capsys, "unsample", "--out", tmp_path / "o.latent", "--devices", most + 1)
    assert_one_line_error(
        code, out, err, f"--devices: devices must be an integer in [1, {most}], got {most + 1}"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_device_limit_is_documented():
    text = (ROOT / "docs" / "command.md").read_text()
    assert f"{_cli.DEVICES_PER_CORE} per CPU core" in text and f"at most {_cli.MAX_DEVICES}" in text


def test_a_failure_inside_the_computation_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    """A guard more than a regression test: XLA's errors (a RuntimeError) remove the temporary file too."""
    from jax_unsampler._noise import noised_latents_chunks as real

    def failing(*args, **kwargs):
        yield next(iter(real(*args, **kwargs)))
        raise RuntimeError("stand-in for an XLA failure")

    monkeypatch.setattr(_cli, "noised_latents_chunks", failing)
    with pytest.raises(RuntimeError, match="stand-in"):
        main(["unsample", "--out", str(tmp_path / "o.latent"), "--steps", "4", "--chunk-steps", "1",
              "--devices", "1"])  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# --- 4: NaN / inf in the output -----------------------------------------------------------------------


def test_an_output_float32_cannot_hold_is_refused_and_nothing_written(tmp_path, capsys):
    """`--normalize` of values near 1e37 overflowed float32's mean and wrote an all-NaN batch,
    exit 0: now one line and no file."""
    np.save(tmp_path / "big.npy", np.full((1, 4, 8, 8), 1e37, np.float32))
    out_file = tmp_path / "o.latent"
    code, out, err = run(
        capsys,
        "unsample",
        tmp_path / "big.npy",
        "--out",
        out_file,
        "--steps",
        "3",
        "--normalize",
        "--devices",
        1,
    )
    assert_one_line_error(code, out, err, "o.latent not written", "NaN or infinite", "--normalize", "1e+37")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]


# --- 7: cache folders that cannot be locked, or sit in a folder open to others -------------------------


def test_a_cache_folder_where_no_lock_can_be_taken_is_refused(tmp_path, monkeypatch):
    """`--cache-dir /proc/self`-like folders: a file can be made but not locked, and JAX then waited
    10 s for its lock on every lookup. The check now takes a lock, and gives up within a second."""
    filelock = pytest.importorskip("filelock")

    def never(self, timeout=None, *args, **kwargs):
        raise filelock.Timeout(str(self.lock_file))

    monkeypatch.setattr(filelock.FileLock, "acquire", never)
    reason = _compilation_cache._writable(tmp_path)
    assert reason is not None and "cannot lock a file in it" in reason
    assert list(tmp_path.iterdir()) == []  # the probe files are gone


def test_a_lockable_cache_folder_passes_and_keeps_nothing(tmp_path):
    assert _compilation_cache._writable(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_cache_folder_under_a_parent_open_to_others_is_refused(tmp_path):
    """Only the folder itself was checked: a parent anyone may write to (and rename in) passed."""
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    open_parent.chmod(0o777)
    reason = _compilation_cache._usable(open_parent / "a" / "cache")
    assert reason is not None and "its parent" in reason and str(open_parent) in reason, reason
    assert list(open_parent.iterdir()) == []  # nothing was created there
    open_parent.chmod(0o777 | stat.S_ISVTX)  # sticky, as /tmp is: others cannot rename our folders
    assert _compilation_cache._usable(open_parent / "a" / "cache") is None


# --- 8: JAX's own JAX_COMPILATION_CACHE_DIR --------------------------------------------------------------


def _entries(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*-cache")) if folder.exists() else []


JAX_KEEPS_ALL = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # else quick programs are not kept


def test_no_cache_keeps_nothing_even_where_jax_has_a_cache_folder(tmp_path):
    jax_folder = tmp_path / "jax-env"
    done = _command(
        "sigmas", "--steps", "4", "--no-cache", JAX_COMPILATION_CACHE_DIR=str(jax_folder), **JAX_KEEPS_ALL
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _entries(jax_folder) == []


def test_cache_dir_wins_over_jaxs_cache_folder(tmp_path):
    jax_folder, mine = tmp_path / "jax-env", tmp_path / "mine"
    done = _command(
        "sigmas",
        "--steps",
        "4",
        "--cache-dir",
        mine,
        JAX_COMPILATION_CACHE_DIR=str(jax_folder),
        **JAX_KEEPS_ALL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _entries(mine) and _entries(jax_folder) == []


# --- 9: no cache folder left by a run that fails ----------------------------------------------------------


def test_a_bad_argument_creates_no_cache_folder(tmp_path):
    done = _command("unsample", "--out", tmp_path / "o.latent", "--scheduler", "bogus",
                    "--cache-dir", tmp_path / "a" / "b" / "c")  # fmt: skip
    assert done.returncode == 2 and "unknown scheduler 'bogus'" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_input_refused_after_jax_started_leaves_no_cache_folder(tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((1, 16, 4, 4), np.float32))
    done = _command("unsample", tmp_path / "wrong.npy", "--out", tmp_path / "o.latent", "--devices", "1",
                    "--cache-dir", tmp_path / "a" / "b" / "c")  # fmt: skip
    assert done.returncode == 2 and "does not fit --model sd15" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.npy"]


# --- 13: a closed pipe; a legacy latent float32 cannot scale ------------------------------------------------


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`jax-unsampler sigmas ... | head` printed 'error: Broken pipe' and exited 2."""
    args = [sys.executable, "-m", "jax_unsampler", "sigmas", "--steps", "10000", "--scheduler", "simple"]
    with subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) as p:
        assert p.stdout is not None and p.stderr is not None
        assert p.stdout.readline().startswith(b"# sd15")
        p.stdout.close()
        err = p.stderr.read()
        code = p.wait(timeout=300)
    assert (code, err) == (141, b"")


def test_a_legacy_latent_beyond_float32_after_scaling_says_so_without_a_warning(tmp_path):
    """A marker-less file with values above ~6.2e37 leaked NumPy's RuntimeWarning and was said
    to hold NaN or infinite values: it holds finite ones that LoadLatent's scaling overflows."""
    path = tmp_path / "old.latent"
    save_file({"latent_tensor": np.full((1, 4, 2, 2), 1e38, np.float32)}, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="overflow float32") as caught:
            latent_file.load_latent(path)
    assert "old.latent" in str(caught.value) and "1/0.18215" in str(caught.value)


# --- 16: arguments before JAX; --out of an image; a model name in the wrong case ---------------------------

NO_JAX = textwrap.dedent(
    """
    import contextlib, io, sys
    from jax_unsampler.app._cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(sys.argv[1:])
        except SystemExit:
            pass
    print("jax" in sys.modules)
    """
)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["unsample", "--help"],
        ["sigmas", "--scheduler", "bogus"],
        ["unsample", "--out", "o.latent", "--model", "sd16"],
        ["unsample", "--out", "o.latent", "--devices", "100000"],
    ],
)
def test_help_and_argument_errors_do_not_import_jax(tmp_path, argv):
    done = subprocess.run(
        [sys.executable, "-c", NO_JAX, *argv], env=_env(), capture_output=True, text=True, timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]
    assert list(tmp_path.iterdir()) == []


def test_the_preset_names_read_without_jax_are_the_presets():
    from jax_unsampler import presets

    assert _cli.preset_names() == presets()


@pytest.mark.parametrize("name", ["x.png", "x.JPG", "x.jpeg", "x.webp", "x.gif", "x.bmp", "x.tif", "x.tiff"])
def test_an_image_name_for_out_is_refused_naming_preview(tmp_path, capsys, name):
    """`--out x.png` wrote a .latent file named x.png."""
    code, out, err = run(capsys, "unsample", "--out", tmp_path / name)
    assert_one_line_error(code, out, err, "--out", name, "--preview")
    assert list(tmp_path.iterdir()) == []


def test_a_model_name_in_the_wrong_case_gets_a_hint(tmp_path, capsys):
    code, out, err = run(capsys, "unsample", "--out", tmp_path / "o.latent", "--model", "SDXL")
    assert_one_line_error(
        code, out, err, "--model: unknown model 'SDXL' (did you mean 'sdxl'?); valid choices: sd15"
    )


# --- 7: a corrupted cache entry is replaced, not warned about on every run -----------------------------


def test_a_corrupted_cache_entry_is_replaced(tmp_path):
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "jax_unsampler", "sigmas", "--steps", "3", "--cache-dir", str(cache)]

    def run_it():
        env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    first = run_it()
    entries = sorted(cache.glob("*-cache"))
    assert entries
    for entry in entries:
        entry.write_bytes(b"not a compiled program")
    second = run_it()
    assert second.stdout == first.stdout
    assert "Error reading persistent compilation cache" not in second.stderr
    assert second.stderr.count("\n") == 1 and "unreadable entries" in second.stderr
    third = run_it()  # written anew: read back without a word
    assert third.stdout == first.stdout and third.stderr == ""
    assert all(e.read_bytes() != b"not a compiled program" for e in cache.glob("*-cache"))


def _run_as_is(argv, **kw):
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "jax_unsampler", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **kw,
    )


def test_proc_self_as_cache_folder_is_one_line_not_a_stall():
    # The probe: each lookup waited 10 s for a lock there (`sigmas --steps 3`: 1 min 43 s).
    done = _run_as_is(["sigmas", "--steps", "3", "--cache-dir", "/proc/self"], cwd="/")
    assert done.returncode == 0 and done.stdout
    assert done.stderr.startswith("jax-unsampler: compilation cache off: /proc/self: ")
    assert done.stderr.count("\n") == 1


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="runs the command as another user: needs root and setpriv (CI runs as root)",
)
def test_a_read_only_cache_folder_of_a_non_root_user_is_one_line(request):
    # As root every folder is writable; as a plain user a read-only folder of one's own passes
    # the ownership check, then no file can be written: refused once, no stall, no warnings.
    nobody = 65534
    # Outside pytest's folders (mode 0700: another user cannot reach into them).
    home = pathlib.Path(tempfile.mkdtemp(prefix="jax-unsampler-nobody-"))
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    cache = home / "cache"
    cache.mkdir()
    home.chmod(0o755)
    os.chown(home, nobody, nobody)
    os.chown(cache, nobody, nobody)
    cache.chmod(0o500)
    argv = ["sigmas", "--steps", "3", "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1]), "HOME": str(home)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", sys.executable,
         "-m", "jax_unsampler", *argv],
        capture_output=True, text=True, env=env, timeout=120, cwd=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"jax-unsampler: compilation cache off: {cache}: cannot write to it")
    assert done.stderr.count("\n") == 1
    assert list(cache.iterdir()) == []
