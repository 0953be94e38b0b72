"""ComfyUI's `.latent` files (and `.safetensors` / `.npy` latents), read and written without torch.

A `.latent` file is a safetensors file as ComfyUI's SaveLatent writes it: the samples under
`latent_tensor`, an empty `latent_format_version_0` tensor marking the current format, and
string metadata. LoadLatent takes `latent_tensor` as float32 and, for old files without the
marker, multiplies it by `1 / 0.18215`.

Files are written through a temporary file in the destination directory and renamed into place
at the end, so a failed or interrupted run leaves nothing behind. The temporary file's name,
`.NAME.jax-unsampler-PID.XXXXXXXX.tmp`, is one only this module makes: a file of that pattern
whose process is gone (killed with SIGKILL, or by a power cut) is removed by the next write of
`NAME` (`remove_stale_temporaries`).

Before reading, the declared size of a latent (its `.npy` or safetensors header) is checked
against the file and against the memory available, so a hostile or truncated header is
refused with a message instead of a huge allocation.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

LATENT_KEY = "latent_tensor"
"""The tensor LoadLatent reads."""

MARKER_KEY = "latent_format_version_0"
"""The empty tensor SaveLatent adds; without it LoadLatent rescales by `LEGACY_SCALE`."""

LEGACY_SCALE = 1.0 / 0.18215
"""LoadLatent's factor for files without the marker (latents saved before the marker existed)."""

SUFFIXES = (".latent", ".safetensors", ".npy")
"""The file types `load_latent` reads."""

TEMP_TAG = "jax-unsampler"
"""Part of every temporary file name this module makes (`.NAME.jax-unsampler-PID.XXXXXXXX.tmp`)."""

_FLOAT8 = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
"""safetensors float8 dtypes NumPy lacks (the `safetensors` NumPy reader fails on them), and
their `ml_dtypes` names (imported only for such a file: it takes a second to load)."""

_READABLE = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"}
"""safetensors dtypes the `safetensors` NumPy reader handles."""

_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
             "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip


def display_name(path: str | os.PathLike) -> str:
    """`path` for messages and metadata: bytes that are not UTF-8 shown as `\\xNN` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux `MemAvailable`), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: int) -> str:
    """`n` bytes for a message: `2.6 GB (2,621,440,000 bytes)`."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def load_latent(path: str | os.PathLike) -> np.ndarray:
    """A latent from a `.latent`, `.safetensors` or `.npy` file, as float32.

    `.latent` and `.safetensors` files are read as ComfyUI's LoadLatent reads them: the
    `latent_tensor` entry in float32, multiplied by `1 / 0.18215` when the file lacks the
    `latent_format_version_0` marker. A `.npy` array is taken as it is.

    **Arguments:**

    - `path`: the file.

    **Returns:** the latent, a float32 array (for ComfyUI files `(B, C, *spatial)`).

    **Raises:** `ValueError` with a one-line message naming the file for a missing, unreadable or
    corrupted file, a directory, FIFO or device, a file without a latent tensor, a declared size
    larger than the file or than the memory available, a dtype it cannot read (safetensors `F4`
    and other 4-bit or exotic types; float8 `F8_E4M3` / `F8_E5M2` are read), non-numeric
    values, values beyond float32's range, or NaN / infinite values.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        raise ValueError(
            f"load_latent: path must be a file name (str or pathlib.Path), got {type(path).__name__}; "
            "for a file's contents in memory use safetensors.numpy.load(data)['latent_tensor']"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"load_latent: path must be a file name (str or pathlib.Path), got {type(path).__name__}"
        )
    path = os.fspath(path)
    name = display_name(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        kind = suffix or "(none)"
        raise ValueError(f"{name}: unsupported file type {kind!r}; expected {', '.join(SUFFIXES)}")
    _check_input_file(path, name)
    latent = _read_npy(path, name) if suffix == ".npy" else _read_safetensors(path, name)
    if not np.all(np.isfinite(latent)):
        raise ValueError(f"{name}: the latent contains NaN or infinite values")
    return latent


def _check_input_file(path: str, name: str) -> None:
    """A regular file, or a message saying what it is instead."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except OSError as e:
        raise ValueError(f"{name}: cannot read it ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{name}: is a directory, not a latent file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{name}: is {_kind(mode)}, not a regular latent file")


def _kind(mode: int) -> str:
    """What a non-regular file is, for a message."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def _check_declared(name: str, kind: str, shape: tuple[int, ...], itemsize: int, data_bytes: int) -> None:
    """The data a header declares must be in the file, and fit in memory with its float32 copy."""
    count = math.prod(shape)
    declared = count * itemsize
    if declared > data_bytes:
        raise ValueError(
            f"{name}: not a readable {kind} file (its header declares shape {shape}, "
            f"{format_bytes(declared)} of data, but the file holds {format_bytes(data_bytes)})"
        )
    needed = declared + count * 4  # the values as stored, and their float32 copy
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{name}: a latent of shape {shape} needs {format_bytes(needed)} of memory to load, "
            f"but only {format_bytes(available)} is available"
        )


def _safetensors_entry(path: str) -> tuple[dict[str, Any], int] | None:
    """The `latent_tensor` header entry and the data's start, or None (safe_open then says why)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= 100_000_000:  # the safetensors library's own header limit
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    entry = header.get(LATENT_KEY) if isinstance(header, dict) else None
    if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)):
        return None
    if not all(isinstance(d, int) and d >= 0 for d in entry["shape"]):
        return None
    return entry, 8 + size


def _read_safetensors(path: str, name: str) -> np.ndarray:
    found = _safetensors_entry(path)
    if found is not None:
        entry, start = found
        dtype, shape = str(entry.get("dtype")), tuple(entry["shape"])
        if dtype not in _READABLE and dtype not in _FLOAT8:
            raise ValueError(
                f"{name}: the latent holds {dtype} values, which cannot be read (readable: float32, "
                "float16, bfloat16, float64, float8 F8_E4M3 / F8_E5M2, integers); save it as float32"
            )
        _check_declared(name, "safetensors", shape, _ITEMSIZE[dtype], os.path.getsize(path) - start)
    try:
        with safe_open(path, framework="numpy") as f:
            keys = sorted(f.keys())
            if LATENT_KEY not in keys:
                held = ", ".join(keys) if keys else "no tensors"
                raise ValueError(f"{name}: no {LATENT_KEY!r} tensor in the file (it holds {held})")
            if found is not None and found[0].get("dtype") in _FLOAT8:
                latent = _as_float32(name, _read_float8(path, *found))
            else:
                latent = _as_float32(name, f.get_tensor(LATENT_KEY))
    except SafetensorError as e:
        raise ValueError(f"{name}: not a readable safetensors file ({_one_line(e)})") from None
    if MARKER_KEY not in keys:
        latent = _legacy_scaled(name, latent)
    return latent


def _legacy_scaled(name: str, latent: np.ndarray) -> np.ndarray:
    """LoadLatent's `* (1 / 0.18215)` of a file without the marker, in float32 as it does;
    values it would make infinite are refused, without NumPy's overflow warning."""
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = latent * np.float32(LEGACY_SCALE)
    overflowed = np.isinf(scaled) & np.isfinite(latent)
    if overflowed.any():
        big = float(np.max(np.abs(latent[overflowed])))
        raise ValueError(
            f"{name}: the latent has no {MARKER_KEY!r} marker, so LoadLatent scales it by 1/0.18215, and its "
            f"values up to {big:.4g} then overflow float32 (largest "
            f"{float(np.finfo(np.float32).max) * 0.18215:.4g} before scaling)"
        )
    return scaled


def _read_float8(path: str, entry: dict[str, Any], start: int) -> np.ndarray:
    """A float8 tensor (which safe_open has validated) read with ml_dtypes' float8 types."""
    begin, end = entry["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + begin)
        raw = f.read(end - begin)
    import ml_dtypes

    return np.frombuffer(raw, getattr(ml_dtypes, _FLOAT8[entry["dtype"]])).reshape(entry["shape"])


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """`(shape, dtype, data start)` of a `.npy` file's header, or None (np.load then says why)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            return tuple(shape), dtype, f.tell()
    except (OSError, ValueError, EOFError):
        return None


def _read_npy(path: str, name: str) -> np.ndarray:
    header = _npy_header(path)
    if header is not None and not header[1].hasobject:
        shape, dtype, start = header
        _check_declared(name, ".npy", shape, dtype.itemsize, os.path.getsize(path) - start)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise ValueError(f"{name}: not a readable .npy file ({_one_line(e)})") from None
    return _as_float32(name, array)


def _as_float32(name: str, array: np.ndarray) -> np.ndarray:
    """LoadLatent's `.float()`: any real numeric dtype (bfloat16, float8 included) becomes float32.

    Finite values beyond float32's range would become infinite: refused, without NumPy's warning.
    """
    if array.dtype.kind not in "fiuV" or array.dtype.kind == "V" and array.dtype.type not in _ml_floats():
        raise ValueError(f"{name}: the latent holds {array.dtype} values, not real numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        latent = np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.itemsize > 4 and array.dtype.kind == "f" and np.isinf(latent).any():
        source_finite = np.isfinite(array)
        if np.any(source_finite & np.isinf(latent)):
            big = float(np.max(np.abs(array[source_finite])))
            raise ValueError(
                f"{name}: the latent holds {array.dtype} values up to {big:.4g}, beyond float32's range "
                f"(largest {float(np.finfo(np.float32).max):.4g})"
            )
    return latent


def _ml_floats() -> set[type]:
    """The `ml_dtypes` float types NumPy lacks (bfloat16, float8), imported on first need."""
    import ml_dtypes

    return {ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def check_output_target(path: str | os.PathLike) -> None:
    """Refuse to replace anything but a missing path or a plain file with one link.

    The write renames a new file into place, which would turn a symbolic link, FIFO or device
    into a regular file and break a hard link; those are refused with a `ValueError` instead.
    """
    name = display_name(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(f"{name}: is a symbolic link; name the file it points to, or remove the link")
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{name}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{name}: is {_kind(st.st_mode)}, not a regular file; it is never replaced")
    if st.st_nlink > 1:
        raise ValueError(
            f"{name}: has {st.st_nlink} hard links; replacing it would break them "
            "(remove it or pick another name)"
        )


_PID = re.compile(rf"\.{re.escape(TEMP_TAG)}-(\d+)\.[^.]+\.tmp")


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files an earlier, killed write of `path` left; returns their paths.

    Only files named `.NAME.jax-unsampler-PID.XXXXXXXX.tmp` (a pattern only `atomic_path`
    makes) whose process `PID` no longer runs are removed, so a write in progress is never touched.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = f".{name}.{TEMP_TAG}-"
    removed: list[str] = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        match = _PID.fullmatch(entry[len(name) + 1 :])
        if match is None or _alive(int(match.group(1))):
            continue
        stale = os.path.join(directory, entry)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(stale).st_mode):
                os.remove(stale)
                removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: keep its file
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path next to `path`, renamed to `path` if the block completes, else removed.

    The temporary file is created in the destination directory (so the final `os.replace` is an
    atomic rename on one file system) and removed on any exception, `KeyboardInterrupt`
    included. An existing `path` must be a plain file with one link (`check_output_target`);
    the new file keeps its permission bits.

    **Arguments:**

    - `path`: the final file.

    **Yields:** the temporary file's path (the file exists, empty).
    """
    path = os.fspath(path)
    check_output_target(path)
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{TEMP_TAG}-{os.getpid()}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()  # mkstemp makes it private; give it a normal file's mode
        os.chmod(tmp, mode)
        yield tmp
        check_output_target(path)  # nothing has put a link or device there meanwhile
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _header(shape: tuple[int, ...], metadata: Mapping[str, str] | None) -> bytes:
    """The safetensors header of a `.latent` file: the JSON, padded with spaces to 8 bytes."""
    header: dict = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise ValueError(f"latent file metadata must map str to str; bad entries: {bad}")
        header["__metadata__"] = dict(metadata)
    nbytes = math.prod(shape) * 4
    header[MARKER_KEY] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    header[LATENT_KEY] = {"dtype": "F32", "shape": list(shape), "data_offsets": [0, nbytes]}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return raw + b" " * (-len(raw) % 8)


class LatentWriter:
    """Writes a `.latent` file piece by piece into an open binary file.

    The `safetensors` library writes a file from tensors held in memory at once and cannot
    append, so batches larger than memory are written here in its layout, by hand: an 8-byte
    little-endian header length, the JSON header (`__metadata__` of strings, then each tensor's
    dtype, shape and byte range), padded with spaces to a multiple of 8 bytes, then the raw
    little-endian data. The result is what SaveLatent writes (float32 `latent_tensor`, empty
    float32 marker) and reads back with `safetensors.safe_open` and LoadLatent.

    **Arguments:**

    - `file`: a binary file opened for writing, at its start.
    - `shape`: the shape of the whole latent batch.
    - `metadata`: string metadata (str to str), or `None`.
    """

    def __init__(self, file, shape: tuple[int, ...], metadata: Mapping[str, str] | None = None):
        self._file = file
        self._shape = tuple(int(d) for d in shape)
        self._item_shape = self._shape[1:]
        self._expected = self._shape[0] if self._shape else 0
        self._written = 0
        header = _header(self._shape, metadata)
        file.write(len(header).to_bytes(8, "little"))
        file.write(header)

    def write(self, chunk) -> None:
        """Append `chunk`, the next entries of the batch: shape `(k, *shape[1:])`."""
        chunk = np.asarray(chunk)
        if chunk.shape[1:] != self._item_shape or self._written + chunk.shape[0] > self._expected:
            raise ValueError(
                f"LatentWriter: a chunk of shape {chunk.shape} does not fit a batch of shape {self._shape} "
                f"with {self._written} entries written"
            )
        self._file.write(np.ascontiguousarray(chunk, dtype="<f4").data)
        self._written += chunk.shape[0]

    def finish(self) -> None:
        """Check that the whole batch was written, and flush it."""
        if self._written != self._expected:
            raise ValueError(f"LatentWriter: {self._written} of {self._expected} entries written")
        self._file.flush()


def latent_file_size(shape: tuple[int, ...], metadata: Mapping[str, str] | None = None) -> int:
    """The exact size in bytes of the `.latent` file `LatentWriter` writes for `shape` and `metadata`."""
    return 8 + len(_header(tuple(int(d) for d in shape), metadata)) + math.prod(shape) * 4


def save_latent(path: str | os.PathLike, latent, metadata: Mapping[str, str] | None = None) -> None:
    """Write `latent` to `path` as a ComfyUI `.latent` file (what SaveLatent writes).

    Float32 `latent_tensor`, the empty `latent_format_version_0` marker and string metadata;
    written to a temporary file and renamed into place, so no partial file is ever left.

    **Arguments:**

    - `path`: the file to write (replaced if it exists).
    - `latent`: the `(B, C, *spatial)` latent.
    - `metadata`: string metadata (str to str), or `None`.
    """
    latent = np.asarray(latent, np.float32)
    if latent.ndim < 1:
        raise ValueError(f"save_latent: latent must have a batch axis, got shape {latent.shape}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = LatentWriter(f, latent.shape, metadata)
        writer.write(latent)
        writer.finish()
