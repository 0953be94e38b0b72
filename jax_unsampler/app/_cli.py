"""The `jax-unsampler` command: ComfyUI `.latent` files in, the node's noised batch out.

`jax-unsampler unsample [INPUT] --out OUT.latent` noises a latent (a ComfyUI `.latent` file, a
`.safetensors` or a `.npy`; without INPUT the embedded demo latent) along a model's sigmas and
writes the batch as a `.latent` file that ComfyUI's LoadLatent loads, optionally with a colour
preview (`--preview`) and a statistics plot (`--stats`). `jax-unsampler sigmas` prints the
node's sigmas. Bad input gives one line on stderr and exit status 2, and leaves no file behind;
SIGINT, SIGTERM and SIGHUP end it with one line and exit status 128 + the signal's number,
after removing its temporary files.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import json
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from .._compilation_cache import (
    command_cache_dir,
    default_cache_dir,
    replacing_unreadable_entries,
    start_command_cache,
)
from .._names import COUPLINGS, MAX_STEPS, MODES, SAMPLERS, SCHEDULERS, SEED_MAX
from .._validation import check_choice, check_int, check_latent_fits
from .._version import __version__
from ..latent_file import (
    SUFFIXES,
    LatentWriter,
    atomic_path,
    check_output_target,
    display_name,
    format_bytes,
    latent_file_size,
    load_latent,
    remove_stale_temporaries,
)
from ._progress import Progress

if TYPE_CHECKING:
    from .._presets import Preset

# Parsing and checking the arguments needs no JAX (`--help` and a bad option answer at once):
# the modules that import it load when the run starts. `noised_latents_chunks` is looked up on
# this module (see `__getattr__`), so that tests can replace it.
_LAZY = {"noised_latents_chunks": ("jax_unsampler._noise", "noised_latents_chunks")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def _lazy(name: str) -> Any:
    """`name` of this module: imported on first use, or what a test put there."""
    return getattr(sys.modules[__name__], name)


PROG = "jax-unsampler"

CHUNK_BYTES = 64 * 2**20
"""The most bytes of the batch computed and held at once; larger runs stream in chunks."""

MAX_DEVICES = 64
"""The most XLA CPU devices `--devices` asks for, on any machine."""

DEVICES_PER_CORE = 4
"""The most XLA CPU devices per CPU core: with many more, XLA's CPU devices fail to meet (a
rendezvous timeout, then an abort) instead of computing."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
"""Endings `--out` refuses: it writes a `.latent` file; images are `--preview` and `--stats`."""


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not the empty ones (`None`, `False`)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised like `KeyboardInterrupt` so that every temporary file is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While the command runs, SIGTERM and SIGHUP raise `Terminated` (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        for sig in _ENDING_SIGNALS:  # a second signal must not interrupt the clean-up
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _ENDING_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> int:
    """Run the command with `argv` (default: `sys.argv[1:]`).

    **Returns:** the exit status: 0, 2 for bad input (one line on stderr), 128 + the signal's
    number when interrupted (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), 141 (128 +
    SIGPIPE), silently, when the reader of its output goes away (`jax-unsampler sigmas | head`).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already reported
        return e.code if isinstance(e.code, int) else 2
    try:
        with _signals_raise(), replacing_unreadable_entries():
            code = args.handler(args)
            sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
            return code
    except BrokenPipeError:
        _silence_stdout()
        return 128 + getattr(signal, "SIGPIPE", 13)  # as a shell reports a command a closed pipe ended
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as e:
        print(f"{PROG}: terminated by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum


def _silence_stdout() -> None:
    """Point stdout at the null device, so that flushing what is left at exit raises nothing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _message(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{display_name(error.filename)}: {error.strerror}" if error.filename else error.strerror
    return " ".join(str(error).split())


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser, with the `unsample` and `sigmas` subcommands."""
    formatter = _Help
    parser = _Parser(
        prog=PROG, formatter_class=formatter,
        description="ComfyUI .latent files in, the BatchUnsampler node's noised batch out.",
        epilog=f"Try the demo: {PROG} unsample --out demo.latent --preview demo.png",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    schedule = _Parser(add_help=False)
    schedule.add_argument("--model", default="sd15", help=f"model family preset: {', '.join(preset_names())}")
    schedule.add_argument("--sampler", default="euler", help="ComfyUI sampler name (decides the sigma count)")
    schedule.add_argument("--scheduler", default="karras", help=f"ComfyUI scheduler: {', '.join(SCHEDULERS)}")
    schedule.add_argument("--steps", type=int, default=20, help=f"KSampler steps, 0 to {MAX_STEPS}")
    schedule.add_argument("--start", type=int, default=0, help="the node's start_at_step")
    schedule.add_argument("--end", type=int, default=MAX_STEPS, help="the node's end_at_step")
    schedule.add_argument(
        "--mode", choices=MODES, default="node",
        help="node: the original node (sigmas divided by the latent scale factor); "
        "model: the model's own sigmas and noise scaling, as ComfyUI feeds the model",
    )  # fmt: skip
    schedule.add_argument(
        "--cache-dir", metavar="DIR",
        help="where compiled programs are kept between runs (default: $JAX_UNSAMPLER_CACHE_DIR, else "
        f"{display_name(str(default_cache_dir()))}; 'off' or an empty value turns the cache off)",
    )  # fmt: skip
    schedule.add_argument("--no-cache", action="store_true", help="compile everything again, keep nothing")

    unsample = commands.add_parser(
        "unsample", parents=[schedule], formatter_class=formatter,
        help="noise a latent step by step into a .latent batch",
        description="Noise a latent along a model's sigmas, as ComfyUI's BatchUnsampler node does, and "
        "write the batch (least noise first) as a .latent file ComfyUI's LoadLatent loads.",
    )  # fmt: skip
    unsample.add_argument(
        "input", nargs="?", metavar="INPUT",
        help=f"latent file ({', '.join(SUFFIXES)}); without it, the embedded demo latent",
    )  # fmt: skip
    unsample.add_argument("--out", required=True, metavar="OUT.latent", help="the .latent file to write")
    unsample.add_argument("--seed", type=int, default=0, help=f"noise seed, 0 to {SEED_MAX}")
    unsample.add_argument("--normalize", action="store_true", help="the node's normalize")
    unsample.add_argument("--coupling", choices=COUPLINGS, default="independent", help="noise across steps")
    unsample.add_argument("--preview", metavar="PNG", help="write a colour preview of the batch")
    unsample.add_argument("--stats", metavar="PNG", help="plot per-step mean, std and normality")
    unsample.add_argument(
        "--devices", type=int, metavar="N",
        help=f"XLA CPU devices to spread the steps over (1 to {max_devices()}: {DEVICES_PER_CORE} per CPU "
        f"core, at most {MAX_DEVICES}; default: one per CPU core). "
        "The output's bytes are the same for every N",
    )  # fmt: skip
    unsample.add_argument("--chunk-steps", type=int, help=argparse.SUPPRESS)  # tests force streaming
    unsample.set_defaults(handler=run_unsample)

    sigmas = commands.add_parser(
        "sigmas", parents=[schedule], formatter_class=formatter,
        help="print the node's sigmas",
        description="Print the sigmas the node noises with, least noise first.",
    )  # fmt: skip
    sigmas.add_argument("--json", action="store_true", help="print a JSON list of floats instead of a table")
    sigmas.set_defaults(handler=run_sigmas)
    return parser


def _start_jax(args: argparse.Namespace, devices: int | None = None) -> None:
    """Set what the command owns in its process before JAX starts: the compilation cache and,
    for `unsample`, the number of XLA CPU devices (the library itself changes neither).

    Called once every argument is checked; folders it creates for the cache are removed again
    (`_remove_new_cache_folders`) when the run then fails on its input."""
    args.new_cache_folder = _first_missing(command_cache_dir(args.cache_dir, args.no_cache))
    start_command_cache(args.cache_dir, args.no_cache)
    if devices is not None:
        import jax

        # Only possible before JAX's first computation in this process; main() called again in a
        # process that already ran JAX keeps the devices it has (the bytes are the same).
        with contextlib.suppress(RuntimeError):
            jax.config.update("jax_num_cpu_devices", devices)


def _first_missing(folder: os.PathLike[str] | None) -> str | None:
    """The outermost folder of `folder`'s chain that does not exist yet (None: all exist)."""
    if folder is None:
        return None
    missing = None
    path = os.path.abspath(folder)
    while not os.path.lexists(path):
        missing, path = path, os.path.dirname(path)
        if path == missing:
            break
    return missing


def _remove_new_cache_folders(args: argparse.Namespace) -> None:
    """Remove the cache folders this run created, after it failed (they hold at most the few
    programs compiled before the failure)."""
    folder = getattr(args, "new_cache_folder", None)
    if folder and os.path.isdir(folder) and not os.path.islink(folder):
        shutil.rmtree(folder, ignore_errors=True)


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, len(affinity(0)) if affinity else (os.cpu_count() or 1))


def max_devices() -> int:
    """The most XLA CPU devices `--devices` accepts here: `DEVICES_PER_CORE` per core, at most
    `MAX_DEVICES`."""
    return min(MAX_DEVICES, DEVICES_PER_CORE * cpu_cores())


def _check_devices(value: int | None) -> int:
    """`--devices`, or one device per core when it is not given."""
    if value is None:
        return min(cpu_cores(), MAX_DEVICES)
    most = max_devices()
    try:
        return check_int("--devices", "devices", value, 1, most)
    except ValueError as e:
        raise ValueError(
            f"{e} ({DEVICES_PER_CORE} per CPU core on this machine's {cpu_cores()}, at most {MAX_DEVICES}: "
            "more XLA CPU devices than cores only wait for each other)"
        ) from None


def _mesh(devices: int) -> Any:
    """A one-axis mesh over at most `devices` of JAX's devices, or None for one device."""
    import jax

    found = jax.devices()[:devices]
    if len(found) < 2:
        return None
    return jax.sharding.Mesh(np.array(found), ("steps",))


@functools.lru_cache(maxsize=1)
def preset_names() -> tuple[str, ...]:
    """The model presets' names, read without JAX (`presets()` reads the same file, with it)."""
    raw = json.loads(resources.files("jax_unsampler").joinpath("data/presets.json").read_text())
    return tuple(raw["presets"])


def _check_choice(flag: str, what: str, value: str, choices: Sequence[str]) -> str:
    """`check_choice`, with a hint for a choice in the wrong case (`--model SDXL`: 'sdxl')."""
    try:
        return check_choice(flag, what, value, choices)
    except ValueError as e:
        same = [c for c in choices if c.lower() == value.lower()]
        if not same or "did you mean" in str(e):
            raise
        raise ValueError(
            f"{flag}: unknown {what} {value!r} (did you mean {same[0]!r}?); "
            f"valid choices: {', '.join(choices)}"
        ) from None


def _check_schedule(args: argparse.Namespace) -> None:
    """Every schedule option, checked without JAX."""
    _check_choice("--model", "model", args.model, preset_names())
    _check_choice("--sampler", "sampler", args.sampler, SAMPLERS)
    _check_choice("--scheduler", "scheduler", args.scheduler, SCHEDULERS)
    check_int("--steps", "steps", args.steps, 0, MAX_STEPS)
    start = check_int("--start", "start", args.start, 0, MAX_STEPS)
    end = check_int("--end", "end", args.end, 0, MAX_STEPS)
    if start > end:
        raise ValueError(
            f"--start {start} is after --end {end}: the window [start, end) must not be reversed"
        )


def _schedule(args: argparse.Namespace) -> tuple[Preset, np.ndarray]:
    """The model family and the run's sigmas (the options are checked: `_check_schedule`)."""
    from .._node_sigmas import unsampler_sigmas
    from .._presets import preset

    family = preset(args.model)
    scale = family.latent_scale_factor if args.mode == "node" else 1.0
    sigmas = unsampler_sigmas(
        family.model_sampling, args.sampler, args.scheduler, args.steps, args.start, args.end, scale
    )
    return family, np.asarray(sigmas)


def run_sigmas(args: argparse.Namespace) -> int:
    """`jax-unsampler sigmas`: the table (step, sigma, model sigma, timestep) or a JSON list."""
    _check_schedule(args)
    _start_jax(args)
    try:
        family, sigmas = _schedule(args)
    except (ValueError, OSError):
        _remove_new_cache_folders(args)
        raise
    if args.json:
        print(json.dumps(sigmas.tolist()))
        return 0
    scale = family.latent_scale_factor if args.mode == "node" else 1.0
    model_sigmas = sigmas * np.float32(scale)
    timesteps = np.asarray(family.model_sampling.timestep(model_sigmas)) if len(sigmas) else np.zeros(0)
    divided = f", divided by the latent scale factor {scale:g}" if args.mode == "node" else ""
    print(f"# {family.name} {args.sampler}/{args.scheduler}, {args.steps} steps, start {args.start}, "
          f"end {args.end}, mode {args.mode}: {len(sigmas)} sigmas, least noise first{divided}")  # fmt: skip
    print(f"{'step':>5}  {'sigma':>12}  {'model sigma':>12}  {'timestep':>10}")
    for i, (s, m, t) in enumerate(zip(sigmas, model_sigmas, timesteps, strict=True)):
        print(f"{i:>5}  {s:>12.6g}  {m:>12.6g}  {float(t):>10.5g}")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before any work if an image is asked for without the `viz` extra, or a target is unusable.

    A target must be missing or a plain file with one link, must not be INPUT (compared by
    resolved path and by inode) and must differ from the other targets. Temporary files that an
    earlier, killed run left next to a target are removed, with a note on stderr.
    """
    suffix = os.path.splitext(args.out)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        raise ValueError(
            f"--out: {display_name(args.out)} ends in {suffix}, an image's ending, but --out writes a "
            f".latent file: name it OUT.latent, and ask for a picture with --preview {display_name(args.out)}"
        )
    wanted = {"--preview": (args.preview, "PIL"), "--stats": (args.stats, "matplotlib")}
    for flag, (path, module) in wanted.items():
        if path and importlib.util.find_spec(module) is None:
            raise ValueError(f"{flag} needs {module}: pip install 'jax-unsampler[viz]'")
    targets = {
        f: p for f, p in (("--out", args.out), ("--preview", args.preview), ("--stats", args.stats)) if p
    }
    seen: dict[object, str] = {}
    if args.input:
        seen.update(dict.fromkeys(_identities(args.input), "INPUT"))
    for flag, path in targets.items():
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ValueError(f"{flag}: directory {display_name(directory)} does not exist")
        for identity in _identities(path):
            if identity in seen:
                other = seen[identity]
                if other == "INPUT":
                    raise ValueError(
                        f"{flag}: {display_name(path)} is INPUT; writing it would destroy the input"
                    )
                raise ValueError(
                    f"{other} and {flag} must be different files (both are {display_name(path)})"
                )
            seen[identity] = flag
        try:
            check_output_target(path)
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from None
    for path in targets.values():
        for stale in remove_stale_temporaries(path):
            print(
                f"{PROG}: removed {display_name(stale)}, left by an earlier run that was killed",
                file=sys.stderr,
            )


def _identities(path: str) -> list[object]:
    """What makes two paths the same file: the resolved path, and (if it exists) device and inode."""
    found: list[object] = [os.path.realpath(path)]
    with contextlib.suppress(OSError):
        st = os.stat(path)
        found.append((st.st_dev, st.st_ino))
    return found


def _check_free_space(path: str, size: int) -> None:
    """Refuse up front when the file system lacks room for the whole `.latent` file."""
    directory = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(directory).free
    if size > free:
        raise ValueError(
            f"--out: {display_name(path)} needs {format_bytes(size)} but only {format_bytes(free)} is free "
            f"in {display_name(directory)}; free some space, or use fewer --steps"
        )


def _fit(latent: np.ndarray, family: Preset, source: str) -> np.ndarray:
    """The latent as a `(B, C, *spatial)` batch of `family`'s shape (a lone latent gets B = 1)."""
    if latent.ndim == family.latent_rank - 1:
        latent = latent[None]
    check_latent_fits(
        source, latent.shape, f"--model {family.name}", family.latent_channels, family.latent_dimensions
    )
    if latent.size == 0:
        raise ValueError(f"{source}: the latent is empty (shape {latent.shape})")
    return latent


def chunk_steps_for(latent_shape: tuple[int, ...], steps: int | None = None) -> int:
    """Steps per chunk so that one chunk of the batch holds at most `CHUNK_BYTES`; given the run's
    `steps`, the same number of chunks split as evenly as possible (1000 steps: 4 x 250, not
    3 x 256 + 232), so that the last chunk rarely needs cutting (costly for a sharded chunk)."""
    most = max(1, CHUNK_BYTES // (math.prod(latent_shape) * 4))
    if steps is None or steps <= most:
        return most
    return -(-steps // -(-steps // most))


def run_unsample(args: argparse.Namespace) -> int:
    """`jax-unsampler unsample`: check everything, then stream the batch into the output files.

    The options and the input file are checked before JAX starts (an error answers at once,
    and creates no cache folder)."""
    _check_outputs(args)
    devices = _check_devices(args.devices)
    _check_schedule(args)
    seed = check_int("--seed", "seed", args.seed, 0, SEED_MAX)
    if args.chunk_steps is not None:
        check_int("--chunk-steps", "chunk steps", args.chunk_steps, 1, MAX_STEPS)
    loaded = load_latent(args.input) if args.input else None
    _start_jax(args, devices)
    try:
        _run_unsample(args, devices, seed, loaded)
    except (ValueError, OSError):
        _remove_new_cache_folders(args)
        raise
    return 0


def _run_unsample(args: argparse.Namespace, devices: int, seed: int, loaded: np.ndarray | None) -> None:
    from .._keys import key_from_seed
    from ._demo import demo_latent

    family, sigmas = _schedule(args)
    key = key_from_seed(seed)
    if len(sigmas) == 0:
        raise ValueError(
            f"--steps {args.steps}, --start {args.start}, --end {args.end} select no step (the window is "
            "[start, min(steps, end))): use --start below both --steps and --end"
        )
    source = display_name(args.input) if args.input else "demo"
    latent = _fit(loaded if loaded is not None else demo_latent(family), family, source)
    metadata = _metadata(args, family, source, latent, sigmas)
    _check_free_space(
        args.out, latent_file_size((len(sigmas) * latent.shape[0], *latent.shape[1:]), metadata)
    )
    _stream(args, family, latent, sigmas, key, metadata, devices)
    steps, items = len(sigmas), latent.shape[0]
    shape = latent.shape[1:]
    print(
        f"wrote {display_name(args.out)}: {steps * items} latents of shape {shape} ({steps} steps x {items})"
    )
    for path in (args.preview, args.stats):
        if path:
            print(f"wrote {display_name(path)}")


def _metadata(args, family: Preset, source: str, latent: np.ndarray, sigmas: np.ndarray) -> dict[str, str]:
    """The settings and seed, as the `.latent` file's string metadata."""
    return {
        "generator": f"{PROG} {__version__}",
        "input": source,
        "model": family.name,
        "sampler": args.sampler,
        "scheduler": args.scheduler,
        "steps": str(args.steps),
        "start_at_step": str(args.start),
        "end_at_step": str(args.end),
        "seed": str(args.seed),
        "normalize": json.dumps(bool(args.normalize)),
        "mode": args.mode,
        "coupling": args.coupling,
        "batch_size": str(latent.shape[0]),
        "layout": "step-major: entry i*B + b is step i (least noise first) of input latent b",
        "prng": "threefry2x32 key [seed >> 32, seed & 0xffffffff]; noise of step i, latent b from "
        "fold_in(fold_in(key, i), b)",
        "sigmas": json.dumps(sigmas.tolist()),
    }


def _stream(
    args, family: Preset, latent: np.ndarray, sigmas: np.ndarray, key, metadata, devices: int
) -> None:
    """Compute the batch chunk by chunk into the `.latent` file and the image collectors.

    Every output goes to a temporary file, renamed into place only once all are complete. A
    write error without a file name (ENOSPC, EFBIG) is reported with the output's name.
    """
    from .._unsample import mode_noise_options

    options = mode_noise_options(family.model_sampling, family.latent_format, args.mode)
    chunk = args.chunk_steps or chunk_steps_for(latent.shape, len(sigmas))
    collectors = _collectors(args, latent, sigmas, options)
    progress = Progress(len(sigmas), enabled=len(sigmas) > chunk)
    with contextlib.ExitStack() as outputs:
        temp = {p: outputs.enter_context(atomic_path(p)) for p in (args.out, args.preview, args.stats) if p}
        with _naming_errors(args.out, temp[args.out]):
            _write_batch(
                args, latent, sigmas, key, metadata, temp[args.out], chunk, options, collectors, progress,
                _mesh(devices),
            )  # fmt: skip
        if args.preview:
            with _naming_errors(args.preview, temp[args.preview]):
                collectors["preview"].image(family.latent_format).save(temp[args.preview], format="PNG")
        if args.stats:
            title = (f"{family.name} {args.sampler}/{args.scheduler}, {args.steps} steps, mode {args.mode}, "
                     f"seed {args.seed}")  # fmt: skip
            with _naming_errors(args.stats, temp[args.stats]):
                collectors["stats"].save(temp[args.stats], title)


@contextlib.contextmanager
def _naming_errors(path: str, temporary: str) -> Iterator[None]:
    """OS errors of writing `temporary` (ENOSPC, EFBIG, ...) as errors of the output `path`."""
    try:
        yield
    except OSError as e:
        if e.errno is None or e.filename not in (None, temporary):
            raise
        raise OSError(e.errno, f"{e.strerror or os.strerror(e.errno)} (while writing it)", path) from None


def _write_batch(
    args, latent, sigmas, key, metadata, temporary, chunk, options, collectors, progress, mesh
) -> None:
    """The `.latent` file, chunk by chunk, each chunk also handed to the image collectors."""
    with open(temporary, "wb") as f:
        writer = LatentWriter(f, (len(sigmas) * latent.shape[0], *latent.shape[1:]), metadata)
        parts = _lazy("noised_latents_chunks")(
            key, latent, sigmas, chunk_steps=chunk, normalize=args.normalize, coupling=args.coupling,
            mesh=mesh, **options,
        )  # fmt: skip
        try:
            for i, chunk_array in enumerate(parts):
                part = np.asarray(chunk_array)
                _check_finite(args, part, i * chunk, latent)
                writer.write(part)
                for collector in collectors.values():
                    collector.add(i * chunk, part)
                progress.update(min(len(sigmas), (i + 1) * chunk))
        finally:
            progress.close()
        writer.finish()


def _check_finite(args: argparse.Namespace, part: np.ndarray, first_step: int, latent: np.ndarray) -> None:
    """Refuse a chunk of the batch holding NaN or infinite values (float32 overflowed): nothing
    is written then."""
    if np.isfinite(part).all():
        return
    bad = np.flatnonzero(~np.isfinite(part).reshape(part.shape[0], -1).all(axis=1))[0]
    step = first_step + int(bad) // latent.shape[0]
    biggest = float(np.max(np.abs(latent)))
    cause = " with --normalize (its mean and standard deviation)" if args.normalize else ""
    raise ValueError(
        f"--out: {display_name(args.out)} not written: the batch holds NaN or infinite values from step "
        f"{step} on, float32 overflowed{cause}; the input's values reach {biggest:.4g}, scale them down"
    )


def _collectors(args, latent: np.ndarray, sigmas: np.ndarray, options: dict) -> dict:
    """The preview and statistics collectors that were asked for (imported only then)."""
    collectors: dict[str, Any] = {}
    if args.preview:
        from ._preview import PreviewCollector

        collectors["preview"] = PreviewCollector(latent, sigmas)
    if args.stats:
        from ._plots import StatsCollector

        collectors["stats"] = StatsCollector(latent, sigmas, args.normalize, options)
    return collectors
