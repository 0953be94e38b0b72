"""JAX's persistent compilation cache, for the processes this package owns: the command and the node.

`import jax_unsampler` changes no JAX setting. The `jax-unsampler` command calls
`enable_compilation_cache` before its first computation, and the ComfyUI node calls
`torch_bridge.enable_node_compilation_cache`, which lands here with a folder in ComfyUI's user
directory. Both set, for the whole process: `jax_compilation_cache_dir`,
`jax_persistent_cache_min_compile_time_secs` (0: every program is kept, not only the slow ones)
and `jax_compilation_cache_max_size`. A user who already set a cache folder keeps it.

A compiled program in the cache can run code in the process that loads it, so the folder must
belong to the user: it is created with mode 0o700, and a folder owned by someone else, or
writable by others, is not used.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator

ENV_VAR = "JAX_UNSAMPLER_CACHE_DIR"
"""Moves the command's cache (a folder), or turns it off (empty, `0`, `off`, `false`, `no`)."""

NODE_ENV_VAR = "JAX_UNSAMPLER_NODE_CACHE"
"""Turns the ComfyUI node's cache off (`0`, `off`, `false`, `no`) or moves it (a folder)."""

MAX_SIZE_BYTES = 1 << 30
"""The cache's size limit; JAX drops the least recently used programs beyond it."""

_OFF = ("", "0", "off", "false", "no")
_PROBE = b"jax-unsampler cache probe"
_LOCK_PROBE_SECONDS = 1.0


def default_cache_dir() -> pathlib.Path:
    """The platform's per-user cache folder for this package's compiled programs.

    Linux and others: `$XDG_CACHE_HOME/jax-unsampler/xla` (default `~/.cache/...`); macOS:
    `~/Library/Caches/jax-unsampler/xla`; Windows: `%LOCALAPPDATA%\\jax-unsampler\\xla`.
    """
    home = pathlib.Path.home()
    if sys.platform == "win32":
        base = pathlib.Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = pathlib.Path(xdg) if os.path.isabs(xdg) else home / ".cache"
    return base / "jax-unsampler" / "xla"


def command_cache_dir(option: str | None, disabled: bool) -> pathlib.Path | None:
    """The command's cache folder: `--no-cache` > `--cache-dir` > `JAX_UNSAMPLER_CACHE_DIR` > default.

    **Returns:** the folder, or None when the cache is off.
    """
    if disabled:
        return None
    if option is not None:
        return None if option.strip().lower() in _OFF else pathlib.Path(option).expanduser()
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return None if env.strip().lower() in _OFF else pathlib.Path(env).expanduser()
    return default_cache_dir()


def _open_parent(folder: pathlib.Path) -> str | None:
    """Why a folder above `folder` makes it unsafe (None when none does): a parent others may
    write to without the sticky bit (as /tmp has) lets them rename or replace the cache folder."""
    if not hasattr(os, "getuid"):
        return None
    for parent in pathlib.Path(os.path.abspath(folder)).parents:
        try:
            info = parent.stat()
        except OSError:
            continue  # not there yet: created below with the folder
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            return f"its parent {parent} may be written to by others (and has no sticky bit)"
    return None


def _usable(folder: pathlib.Path) -> str | None:
    """Why `folder` must not hold the cache (None when it may): it must be ours and not open to
    others, nor may a folder above it be."""
    reason = _open_parent(folder)
    if reason is not None:
        return reason
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = folder.stat()
    except OSError as e:
        return f"cannot create it ({e.strerror or e})"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a folder"
    if hasattr(os, "getuid"):
        if info.st_uid != os.getuid():
            return "it belongs to another user"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return "others may write to it"
    return None


def _writable(folder: pathlib.Path) -> str | None:
    """Why JAX could not keep programs in `folder` (None when it can): a file written there must
    read back, and a lock file there must be taken at once (JAX locks the folder for each
    lookup, waiting 10 s for a lock that cannot be had). Checked once, so that an unusable
    folder is one line, not JAX's warning (or wait) per program."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".jax-unsampler-probe-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_PROBE)
            if pathlib.Path(name).read_bytes() != _PROBE:
                return "a file written there does not read back"
        finally:
            os.unlink(name)
    except OSError as e:
        return f"cannot write to it ({e.strerror or e})"
    return _lockable(folder)


def _lockable(folder: pathlib.Path) -> str | None:
    """Why a lock file in `folder` cannot be taken within a second (None when it can)."""
    try:
        import filelock
    except ImportError:
        return None  # JAX keeps the cache without locks then (see enable_compilation_cache)
    path = folder / f".jax-unsampler-probe-{os.getpid()}.lock"
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=_LOCK_PROBE_SECONDS)
        lock.release()
    except (filelock.Timeout, OSError) as e:
        return f"cannot lock a file in it ({getattr(e, 'strerror', None) or 'timed out'})"
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def _has_filelock() -> bool:
    """JAX needs `filelock` to hold the cache to a size; without it, a size limit turns the cache off."""
    try:
        import filelock  # noqa: F401
    except ImportError:
        return False
    return True


def enable_compilation_cache(
    folder: os.PathLike[str] | str, *, override: bool = False
) -> pathlib.Path | None:
    """Keep every compiled program of this process in `folder` (created if missing).

    Changes the process's JAX settings (see the module docstring): for processes this package
    owns, never called on import. A cache folder the user already configured (JAX's own
    `JAX_COMPILATION_CACHE_DIR`, `jax.config`) wins, unless `override` (a folder the user asked
    this package for by name). The size limit (`MAX_SIZE_BYTES`) needs the `filelock` package
    (a dependency); where it is missing the cache is kept without a limit, and one line on
    stderr says so.

    **Returns:** the folder in use, or None when `folder` is not usable (one line on stderr says
    why: see `_usable` and `_writable`): the process runs uncached (with `override`, also
    without the folder the user configured for JAX).
    """
    import jax

    current = getattr(jax.config, "jax_compilation_cache_dir", None)
    if current and not override:
        return pathlib.Path(current)
    folder = pathlib.Path(folder)
    reason = _usable(folder) or _writable(folder)
    if reason is not None:
        print(f"jax-unsampler: compilation cache off: {folder}: {reason}", file=sys.stderr)
        if override:
            disable_compilation_cache()
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if getattr(jax.config, "jax_compilation_cache_max_size", -1) == -1:
        if _has_filelock():
            jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
        else:
            print(
                f"jax-unsampler: compilation cache {folder} has no size limit: install filelock to hold it "
                f"to {MAX_SIZE_BYTES >> 30} GiB",
                file=sys.stderr,
            )
    return folder


def disable_compilation_cache() -> None:
    """Keep no compiled program in this process, even where `JAX_COMPILATION_CACHE_DIR` names a
    folder (JAX reads that variable when it is imported)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    jax.config.update("jax_compilation_cache_dir", None)


def start_command_cache(option: str | None, disabled: bool) -> pathlib.Path | None:
    """Set the command's cache for its process (`command_cache_dir` says which folder).

    `--no-cache` or an 'off' value keeps nothing, even where JAX's own `JAX_COMPILATION_CACHE_DIR`
    names a folder; a folder named by `--cache-dir` or `JAX_UNSAMPLER_CACHE_DIR` wins over that
    variable; the default folder yields to it.

    **Returns:** the folder in use, or None when nothing is kept.
    """
    folder = command_cache_dir(option, disabled)
    if folder is None:
        disable_compilation_cache()
        return None
    explicit = option is not None or os.environ.get(ENV_VAR) is not None
    return enable_compilation_cache(folder, override=explicit)


_UNREADABLE = "Error reading persistent compilation cache entry"
"""How JAX's warning about a cache entry it cannot read begins (it then compiles the program)."""


@contextlib.contextmanager
def replacing_unreadable_entries() -> Iterator[None]:
    """Run the body with JAX's warnings about unreadable cache entries held back; if there were
    any, delete the cache's entries at the end, so that the next run writes them anew (JAX never
    overwrites an entry it has, so a corrupted one would warn on every run), and say so in one
    line. Other warnings are shown as usual. Never imports JAX itself."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            unreadable = [w for w in caught if str(w.message).startswith(_UNREADABLE)]
            for w in caught:
                if w not in unreadable:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            jax = sys.modules.get("jax")
            folder = getattr(jax.config, "jax_compilation_cache_dir", None) if jax else None
            if unreadable and folder:
                removed = 0
                for entry in pathlib.Path(folder).glob("*-cache"):
                    with contextlib.suppress(OSError):
                        entry.unlink()
                        removed += 1
                for entry in pathlib.Path(folder).glob("*-atime"):
                    with contextlib.suppress(OSError):
                        entry.unlink()
                print(
                    f"jax-unsampler: compilation cache: {len(unreadable)} unreadable entries in {folder} "
                    f"(compiled again, the results are unaffected); its {removed} entries were removed "
                    "and are written anew by the next run",
                    file=sys.stderr,
                )


def comfyui_cache_dir() -> pathlib.Path | None:
    """The node's cache folder: `JAX_UNSAMPLER_NODE_CACHE` if set, else `jax-unsampler-xla-cache`
    in ComfyUI's user directory (kept across restarts, unlike its temp directory), else its temp
    directory. None when turned off or when ComfyUI's `folder_paths` cannot be imported (outside
    ComfyUI the node's code leaves JAX's settings alone)."""
    env = os.environ.get(NODE_ENV_VAR)
    if env is not None and env.strip().lower() in _OFF:
        return None
    if env is not None and env.strip().lower() not in ("1", "on", "true", "yes"):
        return pathlib.Path(env).expanduser()
    try:
        import folder_paths  # type: ignore[import-not-found]  # ComfyUI's module
    except Exception:
        return None
    for getter in ("get_user_directory", "get_temp_directory"):
        try:
            base = getattr(folder_paths, getter)()
        except Exception:
            continue
        if base:
            return pathlib.Path(base) / "jax-unsampler-xla-cache"
    return None
