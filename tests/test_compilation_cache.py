"""The persistent compilation cache: on for the command and the ComfyUI node, never on import.

Each check runs in fresh interpreters: JAX reads its cache settings once per process, and a
second process finding the first one's programs is the point.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Counts JAX's cache events for one small run of the library; prints them as JSON.
PROGRAM = textwrap.dedent(
    """
    import json, sys
    import jax
    from jax_unsampler._compilation_cache import enable_compilation_cache
    events = {}
    count = lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1)
    jax.monitoring.register_event_listener(count)
    used = enable_compilation_cache(sys.argv[1])
    import jax_unsampler as ju
    s = ju.unsampler_sigmas(ju.preset("sd15").model_sampling, "euler", "karras", 5)
    z = ju.noised_latents(jax.random.key(0), jax.numpy.ones((1, 4, 8, 8)), s)
    jax.block_until_ready(z)
    print(json.dumps(dict(events=events, used=str(used), dir=jax.config.jax_compilation_cache_dir)))
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_UNSAMPLER_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu")
    env.update(extra)
    return env


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=_env(**env), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _entries(folder: pathlib.Path) -> set[str]:
    return {p.name for p in folder.rglob("*-cache")} if folder.exists() else set()


def test_a_second_process_loads_the_first_ones_programs(tmp_path):
    cache = tmp_path / "cache"
    first = json.loads(_run([sys.executable, "-c", PROGRAM, str(cache)]).stdout.splitlines()[-1])
    saved = _entries(cache)
    assert first["dir"] == str(cache) and first["events"].get("/jax/compilation_cache/cache_misses", 0) > 0
    assert saved, "the first process kept no program"
    second = json.loads(_run([sys.executable, "-c", PROGRAM, str(cache)]).stdout.splitlines()[-1])
    events = second["events"]
    assert events.get("/jax/compilation_cache/cache_hits", 0) >= 1, events
    assert events.get("/jax/compilation_cache/cache_misses", 0) == 0, events
    assert _entries(cache) == saved  # nothing compiled again, nothing new written
    # The folder is the user's alone (JAX runs what it loads from it).
    assert stat.S_IMODE(cache.stat().st_mode) & 0o077 == 0


def test_importing_and_using_the_library_changes_no_jax_setting(tmp_path):
    code = textwrap.dedent(
        """
        import json, jax
        before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
        import jax_unsampler as ju
        ju.noised_latents(jax.random.key(0), jax.numpy.ones((1, 4, 4, 4)),
                          ju.unsampler_sigmas(ju.preset("sd15").model_sampling, "euler", "karras", 3))
        after = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
        print(json.dumps([before, after, len(jax.devices())]))
        """
    )
    before, after, devices = json.loads(
        _run([sys.executable, "-c", code], XDG_CACHE_HOME=str(tmp_path)).stdout.splitlines()[-1]
    )
    assert before == after == [None, 1.0] and devices == 1
    assert not list(tmp_path.iterdir())


def _command(out: pathlib.Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "jax_unsampler", "unsample", "--out", str(out), "--steps", "3", *options]


def test_the_command_caches_in_the_users_cache_folder_by_default(tmp_path):
    _run(_command(tmp_path / "a.latent", "--devices", "1"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    folder = tmp_path / "xdg" / "jax-unsampler" / "xla"
    saved = _entries(folder)
    assert saved
    _run(_command(tmp_path / "b.latent", "--devices", "1"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert _entries(folder) == saved  # the second run found every program
    assert (tmp_path / "a.latent").read_bytes() == (tmp_path / "b.latent").read_bytes()


@pytest.mark.parametrize(
    ("options", "env", "where"),
    [
        (("--cache-dir", "{tmp}/opt"), {}, "opt"),
        ((), {"JAX_UNSAMPLER_CACHE_DIR": "{tmp}/env"}, "env"),
        (("--cache-dir", "{tmp}/opt"), {"JAX_UNSAMPLER_CACHE_DIR": "{tmp}/env"}, "opt"),
        (("--no-cache",), {}, None),
        (("--no-cache", "--cache-dir", "{tmp}/opt"), {}, None),
        ((), {"JAX_UNSAMPLER_CACHE_DIR": ""}, None),
        ((), {"JAX_UNSAMPLER_CACHE_DIR": "off"}, None),
        (("--cache-dir", "0"), {}, None),
    ],
)
def test_the_command_cache_options(tmp_path, options, env, where):
    fill = lambda v: v.replace("{tmp}", str(tmp_path))  # noqa: E731
    args = [sys.executable, "-m", "jax_unsampler", "sigmas", "--steps", "4", *map(fill, options)]
    _run(args, XDG_CACHE_HOME=str(tmp_path / "xdg"), **{k: fill(v) for k, v in env.items()})
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ([] if where is None else [where])
    if where:
        assert _entries(tmp_path / where)


def test_a_cache_folder_others_may_write_to_is_not_used(tmp_path):
    if not hasattr(os, "getuid"):
        pytest.skip("POSIX permissions")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    done = _run(_command(tmp_path / "a.latent", "--devices", "1", "--cache-dir", str(shared)))
    assert "compilation cache off" in done.stderr and "others may write to it" in done.stderr
    assert not list(shared.iterdir())
    assert (tmp_path / "a.latent").exists()


NODE = textwrap.dedent(
    """
    import json, os, sys
    sys.path[:0] = sys.argv[2:]
    import jax, torch, torch_bridge as tb, torch_bridge_doubles as doubles
    # The doubles import conftest, which turns the caches off for tests: this test's setting instead.
    os.environ.pop("JAX_UNSAMPLER_NODE_CACHE")
    os.environ.update(json.loads(sys.argv[1]))
    if os.environ.pop("COMPILE_FIRST", None):  # JAX compiled before the node ran (a model read, a pack)
        jax.jit(lambda v: v + 1)(1.0).block_until_ready()
    latent = {"samples": torch.ones(1, 4, 8, 8)}
    out = tb.batch_unsample_comfy(doubles.patcher("sd15"), "euler", "karras", 3, 0, 3, latent)
    print(json.dumps(dict(dir=jax.config.jax_compilation_cache_dir, n=int(out["samples"].shape[0]),
                          again=str(tb.enable_node_compilation_cache()))))
    """
)


@pytest.fixture
def comfyui_folders(tmp_path):
    """A stand-in for ComfyUI's `folder_paths` module, with a user and a temp directory."""
    pytest.importorskip("torch", reason="the node runs on torch (the torch extra)")
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "folder_paths.py").write_text(
        f"def get_user_directory():\n    return {str(tmp_path / 'user')!r}\n"
        f"def get_temp_directory():\n    return {str(tmp_path / 'temp')!r}\n"
    )
    return tmp_path


def _node(tmp_path: pathlib.Path, with_comfyui: bool, **env: str) -> dict:
    paths = [str(ROOT / "tests")] + ([str(tmp_path / "mods")] if with_comfyui else [])
    return json.loads(_run([sys.executable, "-c", NODE, json.dumps(env), *paths]).stdout.splitlines()[-1])


def test_the_node_caches_in_comfyuis_user_directory(comfyui_folders):
    got = _node(comfyui_folders, True)
    folder = comfyui_folders / "user" / "jax-unsampler-xla-cache"
    assert got == dict(dir=str(folder), n=3, again=str(folder))
    assert _entries(folder)


def test_the_node_caches_even_when_jax_compiled_before_it(comfyui_folders):
    """JAX decides once whether its cache is on; a program compiled before the node's first run
    (ComfyUI reads the model sampling, another pack uses JAX) must not leave the cache off."""
    got = _node(comfyui_folders, True, COMPILE_FIRST="1")
    folder = comfyui_folders / "user" / "jax-unsampler-xla-cache"
    assert got["dir"] == str(folder)
    assert _entries(folder), "JAX kept its first decision: nothing was cached"


def test_the_node_cache_can_be_turned_off_or_moved(comfyui_folders):
    assert _node(comfyui_folders, True, JAX_UNSAMPLER_NODE_CACHE="0")["dir"] is None
    moved = comfyui_folders / "elsewhere"
    assert _node(comfyui_folders, True, JAX_UNSAMPLER_NODE_CACHE=str(moved))["dir"] == str(moved)
    assert _entries(moved)
    assert not (comfyui_folders / "user").exists()


def test_outside_comfyui_the_node_leaves_jax_alone(comfyui_folders):
    assert _node(comfyui_folders, False)["dir"] is None


# Runs PROGRAM as the README's install has it (no torch) and, besides, without filelock: the
# two modules are made unimportable before JAX starts.
WITHOUT = (
    "import sys; sys.modules.update(torch=None, filelock=None); sys.argv[1:] = [{cache!r}]; exec({program!r})"
)


@pytest.mark.parametrize("hidden", ["torch", "torch and filelock"])
def test_the_cache_stores_programs_without_torch(tmp_path, hidden):
    """torch brought filelock along, and JAX turns the cache off without it when a size limit
    is set (one warning per program, nothing stored): the README's torch-less install had no
    cache. Now filelock is a dependency, and where it is missing the cache is kept unlimited."""
    cache = tmp_path / "cache"
    code = WITHOUT.format(cache=str(cache), program=PROGRAM)
    if hidden == "torch":
        code = code.replace(", filelock=None", "")
    done = _run([sys.executable, "-c", code])
    assert _entries(cache), f"nothing was stored:\n{done.stderr[-2000:]}"
    assert "Please install" not in done.stderr and "Error" not in done.stderr, done.stderr[-2000:]
    if hidden == "torch and filelock":
        (line,) = [x for x in done.stderr.splitlines() if x.startswith("jax-unsampler:")]
        assert "no size limit" in line and "filelock" in line


@pytest.mark.parametrize("folder", ["/proc/self", "{tmp}/file/sub"])
def test_an_unusable_cache_folder_is_one_line_and_the_run_goes_on(tmp_path, folder):
    """A folder JAX could not write to was taken, then every program warned (and a lock wait
    per lookup): the folder is tried once, refused in one line, and the run goes on uncached."""
    (tmp_path / "file").write_text("not a folder")
    folder = folder.format(tmp=tmp_path)
    done = _run(_command(tmp_path / "a.latent", "--devices", "1", "--cache-dir", folder))
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"jax-unsampler: compilation cache off: {folder}: "), lines
    assert (tmp_path / "a.latent").exists()
