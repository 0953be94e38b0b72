"""ComfyUI's `.latent` files (and `.safetensors` / `.npy` latents), read and written without torch.

A `.latent` file is a safetensors file as ComfyUI's SaveLatent writes it: the samples under
`latent_tensor`, an empty `latent_format_version_0` tensor marking the current format, and
string metadata. LoadLatent takes `latent_tensor` as float32 and, for old files without the
marker, multiplies it by `1 / 0.18215`.

Files are written through a temporary file in the destination directory and renamed into place
at the end, so a failed or interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping

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


def load_latent(path: str | os.PathLike) -> np.ndarray:
    """A latent from a `.latent`, `.safetensors` or `.npy` file, as float32.

    `.latent` and `.safetensors` files are read as ComfyUI's LoadLatent reads them: the
    `latent_tensor` entry in float32, multiplied by `1 / 0.18215` when the file lacks the
    `latent_format_version_0` marker. A `.npy` array is taken as it is.

    **Arguments:**

    - `path`: the file.

    **Returns:** the latent, a float32 array (for ComfyUI files `(B, C, *spatial)`).

    **Raises:** `ValueError` with a one-line message naming the file for a missing, unreadable or
    corrupted file, a file without a latent tensor, non-numeric values, or NaN / infinite values.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        kind = suffix or "(none)"
        raise ValueError(f"{path}: unsupported file type {kind!r}; expected {', '.join(SUFFIXES)}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    latent = _read_npy(path) if suffix == ".npy" else _read_safetensors(path)
    if not np.all(np.isfinite(latent)):
        raise ValueError(f"{path}: the latent contains NaN or infinite values")
    return latent


def _read_safetensors(path: str) -> np.ndarray:
    try:
        with safe_open(path, framework="numpy") as f:
            keys = sorted(f.keys())
            if LATENT_KEY not in keys:
                held = ", ".join(keys) if keys else "no tensors"
                raise ValueError(f"{path}: no {LATENT_KEY!r} tensor in the file (it holds {held})")
            latent = _as_float32(path, f.get_tensor(LATENT_KEY))
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({_one_line(e)})") from None
    if MARKER_KEY not in keys:
        latent = latent * np.float32(LEGACY_SCALE)  # LoadLatent multiplies in float32
    return latent


def _read_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    return _as_float32(path, array)


def _as_float32(path: str, array: np.ndarray) -> np.ndarray:
    """LoadLatent's `.float()`: any real numeric dtype (bfloat16 included) becomes float32."""
    if array.dtype.kind not in "fiu" and array.dtype.name != "bfloat16":
        raise ValueError(f"{path}: the latent holds {array.dtype} values, not real numbers")
    return np.ascontiguousarray(array, dtype=np.float32)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path next to `path`, renamed to `path` if the block completes, else removed.

    The temporary file is created in the destination directory (so the final `os.replace` is an
    atomic rename on one file system) and removed on any exception, `KeyboardInterrupt`
    included.

    **Arguments:**

    - `path`: the final file.

    **Yields:** the temporary file's path (the file exists, empty).
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        yield tmp
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
