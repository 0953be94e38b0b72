"""The `jax-unsampler` command, driven end to end (in-process through `main`, and once as a process)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors.numpy as stn
from PIL import Image
from safetensors import safe_open

import jax_unsampler as ju
from jax_unsampler._unsample import mode_noise_options
from jax_unsampler.app import _cli
from jax_unsampler.app._cli import main
from jax_unsampler.app._demo import demo_latent, demo_picture
from jax_unsampler.app._progress import Progress

ROOT = Path(__file__).resolve().parent.parent
MARKER = {"latent_format_version_0": np.zeros((0,), np.float32)}


def run(capsys, *argv):
    """`(exit status, stdout, stderr)` of the command."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read(path):
    """The latent, keys and metadata of a written file (as LoadLatent sees it)."""
    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor("latent_tensor"), sorted(f.keys()), f.metadata()


def expected(latent, seed=0, model="sd15", sampler="euler", scheduler="karras", steps=20, start=0, end=10000,
             mode="node", **kw):  # fmt: skip
    family = ju.preset(model)
    scale = family.latent_scale_factor if mode == "node" else 1.0
    sigmas = ju.unsampler_sigmas(family.model_sampling, sampler, scheduler, steps, start, end, scale)
    options = mode_noise_options(family.model_sampling, family.latent_format, mode)
    return np.asarray(ju.noised_latents(jax.random.key(seed), latent, sigmas, **kw, **options))


def demo_sigmas():
    family = ju.preset("sd15")
    return ju.unsampler_sigmas(family.model_sampling, "euler", "karras", 20, latent_scale_factor=0.18215)


def test_demo_writes_the_nodes_batch_a_preview_and_a_plot(tmp_path, capsys):
    out, png, stats = tmp_path / "demo.latent", tmp_path / "demo.png", tmp_path / "stats.png"
    code, stdout, err = run(capsys, "unsample", "--out", out, "--preview", png, "--stats", stats)
    assert (code, err) == (0, "")
    assert "20 latents of shape (4, 32, 32)" in stdout
    z, keys, meta = read(out)
    assert keys == ["latent_format_version_0", "latent_tensor"]
    assert z.dtype == np.float32 and z.shape == (20, 4, 32, 32)
    assert np.array_equal(z, expected(demo_latent(ju.preset("sd15"))))
    settings = {
        "input": "demo", "model": "sd15", "sampler": "euler", "scheduler": "karras", "steps": "20",
        "start_at_step": "0", "end_at_step": "10000", "seed": "0", "normalize": "false", "mode": "node",
        "coupling": "independent", "batch_size": "1",
    }  # fmt: skip
    assert {k: meta[k] for k in settings} == settings
    assert json.loads(meta["sigmas"]) == np.asarray(demo_sigmas()).tolist()
    with Image.open(png) as im:  # input + 15 frames, 4 x 4 frames of 128 px and their labels
        assert im.format == "PNG" and im.size == (522, 578)
        first = np.asarray(im.convert("RGB"))[16:144, 2:130] / 255
    picture = np.repeat(np.repeat(demo_picture(), 4, axis=0), 4, axis=1)
    assert np.abs(first - picture).max() < 0.01  # the input frame shows the landscape
    with Image.open(stats) as im:
        assert im.format == "PNG" and im.size == (700, 750)
    assert sorted(os.listdir(tmp_path)) == ["demo.latent", "demo.png", "stats.png"]


def test_savelatent_file_round_trip(tmp_path, capsys):
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    stn.save_file({"latent_tensor": x, **MARKER}, str(tmp_path / "in.latent"), metadata={"prompt": "{}"})
    code, _, _ = run(
        capsys, "unsample", tmp_path / "in.latent", "--out", tmp_path / "out.latent", "--steps", 6
    )
    assert code == 0
    z, keys, meta = read(tmp_path / "out.latent")
    assert np.array_equal(z, expected(x, steps=6)) and meta["input"] == str(tmp_path / "in.latent")
    assert np.array_equal(ju.load_latent(tmp_path / "out.latent"), z)  # marked: LoadLatent keeps the values


def test_file_without_marker_is_scaled_as_loadlatent_does(tmp_path, capsys):
    x = np.random.default_rng(2).standard_normal((1, 4, 8, 8)).astype(np.float32)
    stn.save_file({"latent_tensor": x}, str(tmp_path / "old.latent"))
    assert (
        run(capsys, "unsample", tmp_path / "old.latent", "--out", tmp_path / "o.latent", "--steps", 4)[0] == 0
    )
    assert np.array_equal(read(tmp_path / "o.latent")[0], expected(x * np.float32(1 / 0.18215), steps=4))


def test_npy_and_safetensors_inputs_and_a_batch_of_two(tmp_path, capsys):
    x = np.random.default_rng(3).standard_normal((2, 16, 6, 6)).astype(np.float32)
    np.save(tmp_path / "lone.npy", x[0])  # no batch axis: taken as a batch of one
    stn.save_file({"latent_tensor": x, **MARKER}, str(tmp_path / "two.safetensors"))
    args = ("--model", "flux-dev", "--steps", 5, "--scheduler", "simple", "--seed", 9)
    assert run(capsys, "unsample", tmp_path / "lone.npy", "--out", tmp_path / "a.latent", *args)[0] == 0
    assert (
        run(capsys, "unsample", tmp_path / "two.safetensors", "--out", tmp_path / "b.latent", *args)[0] == 0
    )
    kw = dict(model="flux-dev", steps=5, scheduler="simple", seed=9)
    assert np.array_equal(read(tmp_path / "a.latent")[0], expected(x[:1], **kw))
    assert np.array_equal(read(tmp_path / "b.latent")[0], expected(x, **kw))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, capsys):
    for name, seed in (("a", 5), ("b", 5), ("c", 6), ("d", 2**64 - 1), ("e", 2**32 - 1)):
        assert (
            run(capsys, "unsample", "--out", tmp_path / f"{name}.latent", "--steps", 3, "--seed", seed)[0]
            == 0
        )
    data = {p.stem: p.read_bytes() for p in tmp_path.iterdir()}
    assert data["a"] == data["b"]
    assert len({data[k] for k in "acde"}) == 4  # 2**64 - 1 keeps its high bits


def test_model_mode_and_coupling_are_applied_and_recorded(tmp_path, capsys):
    args = ("--model", "sd3", "--steps", 4, "--mode", "model", "--coupling", "markov", "--normalize")
    assert run(capsys, "unsample", "--out", tmp_path / "m.latent", *args)[0] == 0
    z, _, meta = read(tmp_path / "m.latent")
    latent = demo_latent(ju.preset("sd3"))
    want = ju.batch_unsample(jax.random.key(0), "sd3", "euler", "karras", 4, latent=latent, normalize=True,
                             mode="model", coupling="markov")  # fmt: skip
    assert np.array_equal(z, np.asarray(want))
    assert (meta["mode"], meta["coupling"], meta["normalize"]) == ("model", "markov", "true")


def test_streaming_equals_one_chunk(tmp_path, capsys, monkeypatch):
    x = np.random.default_rng(4).standard_normal((2, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ("unsample", tmp_path / "x.npy", "--steps", 10, "--coupling", "markov", "--normalize")
    assert run(capsys, *args, "--out", tmp_path / "whole.latent", "--preview", tmp_path / "whole.png")[0] == 0
    assert run(capsys, *args, "--out", tmp_path / "forced.latent", "--preview", tmp_path / "forced.png",
               "--chunk-steps", 3)[0] == 0  # fmt: skip
    monkeypatch.setattr(_cli, "CHUNK_BYTES", 4 * x[0].nbytes)  # automatic: 2 steps of 2 latents a chunk
    assert _cli.chunk_steps_for(x.shape) == 2
    assert run(capsys, *args, "--out", tmp_path / "auto.latent")[0] == 0
    whole = (tmp_path / "whole.latent").read_bytes()
    assert whole == (tmp_path / "forced.latent").read_bytes() == (tmp_path / "auto.latent").read_bytes()
    assert (tmp_path / "whole.png").read_bytes() == (tmp_path / "forced.png").read_bytes()
    assert np.array_equal(
        read(tmp_path / "whole.latent")[0], expected(x, steps=10, coupling="markov", normalize=True)
    )


def test_chunks_stay_under_64_mb_for_a_1024_px_latent():
    assert _cli.chunk_steps_for((1, 4, 128, 128)) == 256  # 256 x 256 KiB = 64 MiB
    # Given the steps, as many chunks, as even as possible: the last needs no cut when they divide.
    assert [_cli.chunk_steps_for((1, 4, 128, 128), n) for n in (20, 256, 257, 1000, 10000, 1001)] == [
        256, 256, 129, 250, 250, 251,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (("--start", 5, "--end", 5), "--steps 20, --start 5, --end 5 select no step"),
        (("--steps", 0), "--steps 0, --start 0, --end 10000 select no step"),
        (("--start", 30), "--steps 20, --start 30, --end 10000 select no step"),
        (("--start", 7, "--end", 3), "--start 7 is after --end 3"),
    ],
)
def test_empty_or_reversed_window_is_refused(tmp_path, capsys, window, message):
    # An empty .latent breaks every node downstream of LoadLatent: refused (the Python API keeps
    # the empty batch).
    args = (*window, "--preview", tmp_path / "p.png", "--stats", tmp_path / "s.png")
    code, out, err = run(capsys, "unsample", "--out", tmp_path / "e.latent", *args)
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err
    assert os.listdir(tmp_path) == []
    assert run(capsys, "sigmas", "--start", 7, "--end", 3)[0] == 2


def test_video_and_audio_previews(tmp_path, capsys):
    assert run(capsys, "unsample", "--model", "wan21", "--steps", 3, "--out", tmp_path / "v.latent",
               "--preview", tmp_path / "v.png")[0] == 0  # fmt: skip
    assert read(tmp_path / "v.latent")[0].shape == (3, 16, 1, 32, 32)
    np.save(tmp_path / "a.npy", np.zeros((1, 64, 40), np.float32))
    assert run(capsys, "unsample", tmp_path / "a.npy", "--model", "stable-audio", "--steps", 3,
               "--out", tmp_path / "a.latent", "--preview", tmp_path / "a.png")[0] == 0  # fmt: skip
    with Image.open(tmp_path / "a.png") as im:  # 4 frames of channels (64 rows) by length (40), x2
        assert im.size == (4 * (80 + 2) + 2, 14 + 128 + 2 + 2)


def _bad_inputs(d: Path):
    """name: (arguments, what the message must say); files made in `d`."""
    stn.save_file({"samples": np.zeros((1, 4, 4, 4), np.float32)}, str(d / "nolatent.latent"))
    stn.save_file(
        {"latent_tensor": np.full((1, 4, 4, 4), np.nan, np.float32), **MARKER}, str(d / "nan.latent")
    )
    np.save(d / "inf.npy", np.full((1, 4, 4, 4), np.inf, np.float32))
    (d / "corrupt.latent").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    np.save(d / "wrong.npy", np.zeros((1, 16, 4, 4), np.float32))
    return {
        "missing": ([d / "nope.latent"], "nope.latent: no such file"),
        "corrupt": ([d / "corrupt.latent"], "not a readable safetensors file"),
        "no latent tensor": ([d / "nolatent.latent"], "no 'latent_tensor' tensor in the file (it holds sam"),
        "nan": ([d / "nan.latent"], "NaN or infinite"),
        "inf": ([d / "inf.npy"], "NaN or infinite"),
        "scheduler": (["--scheduler", "karas"], "unknown scheduler 'karas' (did you mean 'karras'?); valid "
                      "choices: simple, sgm_uniform, karras, exponential, ddim_uniform, beta, normal, "
                      "linear_quadratic, kl_optimal"),
        "sampler": (["--sampler", "eulr"], "unknown sampler 'eulr' (did you mean 'euler'?); valid choices: "
                    "euler, euler_cfg_pp, "),
        "negative steps": (["--steps", "-1"], "--steps: steps must be an integer in [0, 10000], got -1"),
        "model": (["--model", "sd16"], "unknown model 'sd16' (did you mean 'sd15'?); valid choices: sd15, "),
        "seed": (["--seed", "-3"], "--seed: seed must be an integer in [0, 18446744073709551615], got -3"),
        "channels": ([d / "wrong.npy"], "does not fit --model sd15, whose latents are (B, 4, H, W)"),
        "no picture": (["--model", "stable-audio"], "stable-audio has no RGB preview factors"),
        "out dir": (["--out", d / "no" / "x.latent"], "--out: directory"),
        "mode": (["--mode", "nodes"], "argument --mode: invalid choice: 'nodes'"),
        "not a number": (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
        "same files": (["--preview", d / "out.latent"], "must be different files"),
        "devices": (["--devices", "0"], "--devices: devices must be an integer in [1, "),
    }  # fmt: skip


BAD_INPUTS = [
    "missing", "corrupt", "no latent tensor", "nan", "inf", "scheduler", "sampler", "negative steps", "model",
    "seed", "channels", "no picture", "out dir", "mode", "not a number", "same files", "devices",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_one_line_exit_2_no_file_left(tmp_path, capsys, case):
    cases = _bad_inputs(tmp_path)
    assert sorted(cases) == sorted(BAD_INPUTS)
    args, message = cases[case]
    before = sorted(os.listdir(tmp_path))
    code, out, err = run(capsys, "unsample", "--out", tmp_path / "out.latent", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("jax-unsampler") and "error: " in err
    assert message in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before


def test_failed_run_keeps_an_existing_output(tmp_path, capsys):
    (tmp_path / "out.latent").write_bytes(b"earlier run")
    assert run(capsys, "unsample", "--steps", "-2", "--out", tmp_path / "out.latent")[0] == 2
    assert (tmp_path / "out.latent").read_bytes() == b"earlier run"


def test_interrupt_mid_stream_leaves_nothing(tmp_path, capsys, monkeypatch):
    real = _cli.noised_latents_chunks

    def interrupted(*args, **kwargs):
        yield next(iter(real(*args, **kwargs)))
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "noised_latents_chunks", interrupted)
    code, _, err = run(capsys, "unsample", "--out", tmp_path / "o.latent", "--preview", tmp_path / "p.png",
                       "--chunk-steps", 2)  # fmt: skip
    assert code == 130 and err == "jax-unsampler: interrupted\n"
    assert os.listdir(tmp_path) == []


def test_missing_viz_fails_before_any_work(tmp_path, capsys, monkeypatch):
    real = _cli.importlib.util.find_spec
    monkeypatch.setattr(
        _cli.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real(name)
    )
    from jax_unsampler.app import _demo

    monkeypatch.setattr(_demo, "demo_latent", lambda family: pytest.fail("worked before checking"))
    code, _, err = run(capsys, "unsample", "--out", tmp_path / "o.latent", "--stats", tmp_path / "s.png")
    assert (
        code == 2
        and err == "jax-unsampler: error: --stats needs matplotlib: pip install 'jax-unsampler[viz]'\n"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", ["node", "model"])
def test_sigmas_json_agrees_with_unsampler_sigmas(capsys, mode):
    args = (
        "--model",
        "sdxl",
        "--sampler",
        "dpm_2",
        "--scheduler",
        "beta",
        "--steps",
        12,
        "--start",
        2,
        "--end",
        9,
    )
    code, out, _ = run(capsys, "sigmas", *args, "--mode", mode, "--json")
    family = ju.preset("sdxl")
    scale = family.latent_scale_factor if mode == "node" else 1.0
    want = ju.unsampler_sigmas(family.model_sampling, "dpm_2", "beta", 12, 2, 9, latent_scale_factor=scale)
    assert code == 0 and json.loads(out) == np.asarray(want).tolist() and len(json.loads(out)) == 7


def test_sigmas_table(capsys):
    code, out, _ = run(capsys, "sigmas", "--steps", 4)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 + 4
    assert lines[1].split() == ["step", "sigma", "model", "sigma", "timestep"]
    assert lines[-1].split() == ["3", "80.2341", "14.6146", "999"]  # SD1.5's top sigma, divided by 0.18215


@pytest.mark.parametrize("argv", [["--help"], ["unsample", "--help"], ["sigmas", "--help"]])
def test_help(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "usage: jax-unsampler" in out


def test_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = Progress(10, stream=Terminal())
    bar.update(5)
    bar.close()
    assert bar.stream.getvalue().startswith("\r[###############...............]  50% 5/10 steps")
    quiet = Progress(10, stream=io.StringIO())
    quiet.update(5)
    quiet.close()
    assert quiet.stream.getvalue() == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["unsample", "--out", str(tmp_path / "o.latent"), "--steps", "6", "--chunk-steps", "2"]) == 0
    assert terminal.getvalue().count("\r[") == 3 and "6/6 steps" in terminal.getvalue()


def test_as_a_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "jax_unsampler", "unsample", "--steps", "3"]
    ok = subprocess.run(
        [*command, "--out", "ok.latent"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stderr == "" and read(tmp_path / "ok.latent")[0].shape == (3, 4, 32, 32)
    bad = subprocess.run([*command, "--scheduler", "x", "--out", "bad.latent"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith(
        "jax-unsampler: error: --scheduler: unknown scheduler 'x'"
    )
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "bad.latent").exists()


def test_command_never_imports_torch(tmp_path):
    code = (
        "import sys; from jax_unsampler.app import main; "
        "code = main(['unsample', '--steps', '2', '--out', 'o.latent', '--preview', 'p.png', "
        "'--stats', 's.png']); "
        "print(code, 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "0 False"


def test_demo_picture_is_reproducible():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from make_demo_picture import demo_picture as make
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert np.array_equal(make() / np.float32(255), demo_picture())
